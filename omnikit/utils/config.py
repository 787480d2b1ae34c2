"""Nested dataclass configs built from the flat keywords users type (``predictor_depth=2``).

A config class with nested config fields declares ``flat_fields``, ``{flat keyword: (nested field,
its field)}``, and ``nested_defaults``, ``{nested field: defaults when built from flat keywords}``.
:func:`nest_flat` turns ``{"dim": 48, "predictor_depth": 2}`` into
``{"temporal": DecoderConfig(dim=48, ...), "predictor": DecoderConfig(depth=2, ...)}``; a nested
field may also come whole (a config object) or as a mapping of its fields (as in ``config.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

__all__ = ["NestedConfig", "flat_keywords", "flat_names", "nest_flat", "nested_field"]

ConfigT = TypeVar("ConfigT", bound=type)
_DEFAULTS_KEY = "nested_defaults"


def flat_names(config_cls: type) -> set[str]:
    """The flat keywords ``config_cls`` maps onto its nested configs (none for a plain dataclass)."""
    return set(getattr(config_cls, "flat_fields", {}))


def _fields(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def nest_flat(config_cls: type, values: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor keyword arguments of ``config_cls`` from ``values`` that may use its flat keywords.

    A nested field starts from its value in ``values`` when that is a config object, else from its
    value in ``base`` (earlier keyword arguments, e.g. a preset's), else from ``nested_defaults``;
    a mapping given for it, then its flat keywords, update that start.
    """
    flat: dict[str, tuple[str, str]] = getattr(config_cls, "flat_fields", {})
    if not flat:
        return dict(values)
    defaults: dict[str, dict[str, Any]] = getattr(config_cls, "nested_defaults", {})
    hints = typing.get_type_hints(config_cls)
    out = {key: value for key, value in values.items() if key not in flat}
    updates: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key in flat:
            outer, inner = flat[key]
            updates.setdefault(outer, {})[inner] = value
    for outer in dict.fromkeys(o for o, _ in flat.values()):
        given = out.get(outer)
        if given is None and outer not in updates:
            continue
        if dataclasses.is_dataclass(given):
            start = _fields(given)
        elif base is not None and base.get(outer) is not None:
            start = _fields(base[outer])
        else:
            start = dict(defaults.get(outer, {}))
        if isinstance(given, Mapping):
            start.update(given)
        out[outer] = hints[outer](**{**start, **updates.get(outer, {})})
    return out


class NestedConfig:
    """Mixin of a dataclass config with nested configs: :meth:`from_flat` and the class attributes
    ``flat_fields`` / ``nested_defaults`` that :func:`nest_flat` reads (empty here)."""

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = {}
    nested_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_flat(cls, **values: Any) -> Self:
        """Build from flat keywords, e.g. ``TalkerConfig.from_flat(dim=48, depth=2, predictor_depth=1, ...)``."""
        return cls(**nest_flat(cls, values))


def nested_field(config_cls: type, **defaults: Any) -> Any:
    """A dataclass field holding a ``config_cls`` that starts from ``defaults`` when built from flat
    keywords (:func:`flat_keywords` makes them the class's ``nested_defaults``); its default is
    ``config_cls(**defaults)`` when those are complete, else the field is required."""
    metadata = {_DEFAULTS_KEY: defaults}
    required = {f.name for f in dataclasses.fields(config_cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if required - set(defaults):
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default_factory=lambda: config_cls(**defaults), metadata=metadata)


def _flat_property(outer: str, inner: str) -> property:
    return property(lambda self: getattr(getattr(self, outer), inner), doc=f"``{outer}.{inner}``")


def flat_keywords(cls: ConfigT) -> ConfigT:
    """Class decorator (above ``@dataclass``) of a :class:`NestedConfig`: the constructor also takes the flat
    keywords of ``cls.flat_fields`` (through :func:`nest_flat`), each flat keyword that is not a field is a
    read-only property of the nested value, and the defaults of :func:`nested_field` s are ``nested_defaults``."""
    cls.nested_defaults = {**cls.nested_defaults, **{  # type: ignore[attr-defined]
        f.name: f.metadata[_DEFAULTS_KEY] for f in dataclasses.fields(cls) if _DEFAULTS_KEY in f.metadata}}
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **values: Any) -> None:
        init(self, *args, **nest_flat(cls, values))

    cls.__init__ = __init__  # type: ignore[misc]
    for name, (outer, inner) in cls.flat_fields.items():  # type: ignore[attr-defined]
        if name not in cls.__dict__:
            setattr(cls, name, _flat_property(outer, inner))
    return cls
