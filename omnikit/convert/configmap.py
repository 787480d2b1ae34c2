"""Declarative, invertible maps between a published ``config.json`` and an omnikit config.

A :class:`ConfigMap` is an ordered tuple of rules, read in order (a rule may use the fields the
rules before it produced) in both directions:

- :meth:`ConfigMap.read` ``config.json dict -> {omnikit field: value}`` (``load_hf``, ``from_transformers``);
- :meth:`ConfigMap.write` ``omnikit config -> config.json dict`` (``save_hf`` of a model that was not
  loaded), or ``None`` when the config does not have this architecture's fixed layout.

Rules (``theirs`` is a config.json key; ``"a.b"`` names key ``b`` of the sub-dict ``a``):

- :class:`Field`: ``ours <-> theirs`` with a default, older spellings (``fallbacks``) and a cast;
- :class:`Convert`: a field stored in another unit, converted both ways;
- :class:`Derived`: ``theirs`` when present, else computed from the fields read before it
  (``head_dim = hidden_size // num_attention_heads``); always written;
- :class:`Refuse`: a config.json option omnikit does not model: any value outside ``allowed``
  raises ``ValueError`` naming the key (never ignored); writes ``allowed[0]``;
- :class:`Fixed`: an omnikit field this architecture fixes (``qk_norm=True``, or a function of the
  fields read before it); on write, a config with another value does not fit the map; :class:`Same`
  ties a field to another one;
- :class:`Constant`: a config.json key written with a constant (``model_type``) or a function of the
  omnikit fields, ignored on read;
- :class:`Nested`: a sub-config (``text_config``; ``""``: the same dict) read by its own map into
  one omnikit field (a config that holds configs).

Example, a decoder with the head width derived when the checkpoint omits it::

    cmap = ConfigMap((
        Field("dim", "hidden_size"), Field("num_heads", "num_attention_heads"),
        Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]),
        Refuse("hidden_act", ("silu",)), Fixed("qk_norm", True), Constant("model_type", "qwen3"),
    ), target=DecoderConfig)
    cmap.config({"hidden_size": 64, "num_attention_heads": 4})   # DecoderConfig(dim=64, head_dim=16, ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.config import flat_names

__all__ = ["REQUIRED", "ConfigMap", "Constant", "Convert", "Derived", "Field", "Fixed", "MissingConfigKey", "Nested",
           "Refuse", "Same"]

Fields = dict[str, Any]


class MissingConfigKey(OmnikitValueError):
    """A key a :class:`ConfigMap` requires is absent from the config.json (``.key`` names it)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"config.json expected {key!r} but it is absent")
        self.key = key


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a :class:`Field` the config.json must hold.
REQUIRED: Any = _Required()
_ABSENT = object()


def _get(config: Mapping[str, Any], path: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"`` (``""``: ``config`` itself); ``_ABSENT`` when a key is missing or None."""
    value: Any = config
    for key in path.split(".") if path else ():
        if not isinstance(value, Mapping) or value.get(key) is None:
            return _ABSENT
        value = value[key]
    return value


def _put(config: dict[str, Any], path: str, value: Any) -> None:
    *outer, last = path.split(".")
    for key in outer:
        config = config.setdefault(key, {})
    config[last] = list(value) if isinstance(value, tuple) else value


def _first(config: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    return next((v for v in (_get(config, p) for p in paths) if v is not _ABSENT), _ABSENT)


@dataclass(frozen=True)
class Field:
    """``ours = cast(config[theirs])`` (or the first of ``fallbacks`` present, else ``default``).

    On write, a required field (no default) whose value is ``None`` does not fit the map."""

    ours: str
    theirs: str
    default: Any = REQUIRED
    cast: Callable[[Any], Any] | None = None
    fallbacks: tuple[str, ...] = ()

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        value = _first(config, (self.theirs, *self.fallbacks))
        if value is _ABSENT:
            if self.default is REQUIRED:
                raise MissingConfigKey(self.theirs)
            value = self.default
        fields[self.ours] = self.cast(value) if self.cast is not None and value is not None else value

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        value = values[self.ours]
        _put(out, self.theirs, value)
        return value is not None or self.default is not REQUIRED


@dataclass(frozen=True)
class Convert:
    """``ours = read_value(*config[theirs], fields)``, ``theirs = write_value(ours, fields)``: a field stored
    in another unit (``n_window_infer`` frames for omnikit's ``attn_window_chunks`` chunks) or in several
    keys (``theirs`` a tuple, ``default`` one per key, ``write_value`` returning one value per key); a
    ``None`` written value leaves its key out. ``fallbacks`` are older spellings of a single key; a required
    field whose value is ``None`` does not fit on write."""

    ours: str
    theirs: str | tuple[str, ...]
    read_value: Callable[..., Any]
    write_value: Callable[[Any, Fields], Any]
    default: Any = REQUIRED
    fallbacks: tuple[str, ...] = ()

    def _keys(self) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        if isinstance(self.theirs, tuple):
            defaults = self.default if isinstance(self.default, tuple) else (self.default,) * len(self.theirs)
            return self.theirs, defaults
        return (self.theirs,), (self.default,)

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        values = []
        for key, default in zip(*self._keys()):
            value = _first(config, (key, *self.fallbacks))
            if value is _ABSENT and default is REQUIRED:
                raise MissingConfigKey(key)
            values.append(default if value is _ABSENT else value)
        fields[self.ours] = self.read_value(*values, fields)

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        if values[self.ours] is None:
            return self.default is not REQUIRED  # a required field without a value does not fit
        written = self.write_value(values[self.ours], values)
        keys, _ = self._keys()
        for key, value in zip(keys, written if isinstance(self.theirs, tuple) else (written,)):
            if value is not None:  # None: a key read but never written
                _put(out, key, value)
        return True


@dataclass(frozen=True)
class Derived:
    """``ours = config[theirs]`` when present, else ``derive(fields read so far)``; always written."""

    ours: str
    theirs: str
    derive: Callable[[Fields], Any]

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        value = _get(config, self.theirs)
        fields[self.ours] = self.derive(fields) if value is _ABSENT else value

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        value = values[self.ours]
        _put(out, self.theirs, self.derive(values) if value is None else value)
        return True


@dataclass(frozen=True)
class Refuse:
    """A config.json option that must be one of ``allowed`` (absent: ``default``, by default allowed);
    anything else raises ``ValueError`` naming it (as ``label`` when given: ``"vision_config.hidden_act"``).
    Written as ``allowed[0]`` unless ``write_value`` is False."""

    theirs: str
    allowed: tuple[Any, ...]
    fallbacks: tuple[str, ...] = ()
    write_value: bool = True
    label: str = ""
    default: Any = _ABSENT

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        value = _first(config, (self.theirs, *self.fallbacks))
        value = self.default if value is _ABSENT else value
        if value is not _ABSENT and value not in self.allowed:
            expected = repr(self.allowed[0]) if len(self.allowed) == 1 else f"one of {list(self.allowed)}"
            raise OmnikitValueError(f"{self.label or self.theirs}={value!r} is not supported; expected {expected}")

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        if self.write_value:
            _put(out, self.theirs, self.allowed[0])
        return True


@dataclass(frozen=True)
class Fixed:
    """The omnikit field ``ours`` is ``value`` for this architecture, or ``value(fields read before it)``
    when ``value`` is callable (a config with another value does not fit it on write, unless
    ``checked=False``: a field the layout does not use)."""

    ours: str
    value: Any
    checked: bool = True

    def _value(self, fields: Fields) -> Any:
        return self.value(fields) if callable(self.value) else self.value

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        fields[self.ours] = self._value(fields)

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        return not self.checked or values[self.ours] == self._value(values)


@dataclass(frozen=True)
class Same:
    """The omnikit field ``ours`` equals the field ``source`` (one config.json key sets both)."""

    ours: str
    source: str

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        fields[self.ours] = fields[self.source]

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        return values[self.ours] == values[self.source]


@dataclass(frozen=True)
class Constant:
    """config.json key ``theirs`` written as ``value`` (``model_type``), or ``value(omnikit fields)`` when
    callable (a key the published config repeats from another field); not read."""

    theirs: str
    value: Any

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        return None

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        _put(out, self.theirs, self.value(values) if callable(self.value) else self.value)
        return True


@dataclass(frozen=True)
class Nested:
    """The sub-config ``config[theirs]`` (``""``: ``config`` itself) read by ``cmap`` into the omnikit
    field ``ours``."""

    ours: str
    theirs: str
    cmap: ConfigMap

    def read(self, config: Mapping[str, Any], fields: Fields) -> None:
        sub = _get(config, self.theirs)
        fields[self.ours] = self.cmap.config({} if sub is _ABSENT else sub)

    def write(self, values: Fields, out: dict[str, Any]) -> bool:
        sub = self.cmap.write(values[self.ours])
        if sub is not None and self.theirs:
            _put(out, self.theirs, sub)
        elif sub is not None:
            out.update(sub)
        return sub is not None


Rule = Field | Convert | Derived | Refuse | Fixed | Same | Constant | Nested


@dataclass(frozen=True)
class ConfigMap:
    """Ordered rules between a config.json dict and the omnikit ``target`` config (a dataclass;
    ``None``: a plain dict of fields)."""

    rules: tuple[Rule, ...]
    target: type | None = None

    def __add__(self, other: ConfigMap) -> ConfigMap:
        return ConfigMap(self.rules + other.rules, self.target or other.target)

    def read(self, config: Mapping[str, Any]) -> Fields:
        """``{omnikit field: value}`` of a config.json dict; ``ValueError`` naming a refused or absent key."""
        if not isinstance(config, Mapping):
            raise OmnikitValueError(f"`config` expected a config.json mapping but got {type(config).__name__}")
        fields: Fields = {}
        for rule in self.rules:
            rule.read(config, fields)
        return fields

    def config(self, config: Mapping[str, Any]) -> Any:
        """The ``target`` config of a config.json dict (the fields when there is no target)."""
        fields = self.read(config)
        return self.target(**fields) if self.target is not None else fields

    __call__ = config

    def write(self, config: Any) -> dict[str, Any] | None:
        """The config.json dict of an omnikit ``config`` (a dataclass, with the flat keywords it reads, or a
        mapping of fields), or ``None`` when a :class:`Fixed` / :class:`Same` / :class:`Nested` rule does not fit it."""
        values = dict(config) if isinstance(config, Mapping) else {
            name: getattr(config, name) for name in [f.name for f in dataclasses.fields(config)] + sorted(
                flat_names(type(config))) if hasattr(config, name)}
        out: dict[str, Any] = {}
        return out if all(rule.write(values, out) for rule in self.rules) else None
