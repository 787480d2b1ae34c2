"""The model registry: ``register_model``, ``create_model``, ``list_models``, ``model_info``.

An *entrypoint* is a function that builds a module from keyword overrides. Registered with
``@register_model(kind=..., modalities=...)`` it becomes reachable by name::

    @register_model(kind="decoder", modalities=("text",))
    def decoder_tiny(**overrides) -> nn.Module:
        return Decoder(configure(DecoderConfig, "decoder_tiny", overrides, dim=64, depth=2, ...))

``create_model`` stamps the built module with a :class:`ModelSpec` (name + overrides), which is
what ``save_pretrained`` writes to ``config.json`` so that ``load_pretrained`` can rebuild it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.utils.config import flat_names, nest_flat
from omnikit.utils.config_checks import validate_config
from omnikit.utils.precision import cast_model

__all__ = [
    "KINDS",
    "ModelInfo",
    "ModelSpec",
    "configure",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]

#: The kinds of model the registry knows. ``list_models(kind=...)`` accepts exactly these.
KINDS: tuple[str, ...] = (
    "audio_encoder",
    "codec",
    "frame_encoder",
    "temporal",
    "moe",
    "adapter",
    "decoder",
    "talker",
    "omni",
    "head",
    "custom",
)

#: The attribute under which ``create_model`` records how a module was built.
SPEC_ATTR = "omnikit_spec"

EntryPoint = Callable[..., nn.Module]

#: How ``create_model(..., pretrained=path)`` treats a checkpoint, set by :mod:`omnikit.checkpoint`
#: (which builds on this module, so the registry never imports it): ``"check"(build_on_meta, path)``
#: refuses a checkpoint that does not fit before anything is allocated, ``"load"(model, path)``
#: loads its weights.
PRETRAINED_HOOKS: dict[str, Callable[..., Any]] = {}
ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one entrypoint."""

    name: str
    kind: str
    modalities: tuple[str, ...]
    entrypoint: EntryPoint
    description: str


@dataclass
class ModelSpec:
    """How a registered model was built; stored on the module as ``module.omnikit_spec``."""

    name: str
    kind: str
    modalities: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    fn: EntryPoint | None = None,
    *,
    kind: str = "custom",
    modalities: tuple[str, ...] | list[str] = (),
    name: str | None = None,
) -> Any:
    """Register an entrypoint under its function name (or ``name``).

    Usable bare (``@register_model``, kind ``"custom"``) or with arguments
    (``@register_model(kind="decoder", modalities=("text",))``). A duplicate name raises
    ``ValueError``; so does an unknown ``kind``.
    """

    def decorator(entry: EntryPoint) -> EntryPoint:
        if not callable(entry):
            raise OmnikitTypeError(f"register_model expected a callable entrypoint but got {type(entry).__name__}")
        key = name or entry.__name__
        if kind not in KINDS:
            raise OmnikitValueError(f"`kind` expected one of {list(KINDS)} but got {kind!r} (model {key!r})")
        if key in _REGISTRY:
            raise OmnikitValueError(f"a model named {key!r} is already registered ({_REGISTRY[key].entrypoint})")
        doc = inspect.getdoc(entry) or ""
        _REGISTRY[key] = ModelInfo(key, kind, tuple(modalities), entry, doc.splitlines()[0] if doc else "")
        return entry

    return decorator(fn) if fn is not None else decorator


def _unknown_name_error(name: str) -> KeyError:
    names = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    close += [n for n in names if name and name in n and n not in close][: 5 - len(close)]
    hint = f"closest registered names: {close}" if close else f"{len(names)} models are registered; see list_models()"
    return KeyError(f"unknown model {name!r}; {hint}")


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered name; ``KeyError`` listing close names otherwise."""
    if not isinstance(name, str):
        raise OmnikitTypeError(
            f"`name` expected a registered model name (str) but got {type(name).__name__} ({name!r})"
        )
    if name not in _REGISTRY:
        raise _unknown_name_error(name)
    return _REGISTRY[name]


def list_models(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Registered names matching the fnmatch ``pattern`` (and ``kind``), sorted."""
    if not isinstance(pattern, str):
        raise OmnikitTypeError(f"`pattern` expected an fnmatch pattern (str) but got {type(pattern).__name__}")
    if kind is not None and kind not in KINDS:
        raise OmnikitValueError(f"`kind` expected one of {list(KINDS)} but got {kind!r}")
    return sorted(
        n for n, info in _REGISTRY.items() if fnmatch.fnmatchcase(n, pattern) and (kind is None or info.kind == kind)
    )


def configure(config_cls: type[ConfigT], model_name: str, overrides: Mapping[str, Any], **defaults: Any) -> ConfigT:
    """Build the dataclass ``config_cls`` from preset ``defaults`` updated by user ``overrides``.

    An override that is not a field of ``config_cls`` (nor one of its flat keywords, see
    :func:`omnikit.utils.config.nest_flat`) raises ``TypeError`` naming it. Every field is then
    validated once (:func:`omnikit.utils.config_checks.validate_config`): a value of the wrong type
    raises ``TypeError``, a non-finite or out-of-range number ``ValueError``, both naming the field.
    """
    fields = {f.name for f in dataclasses.fields(config_cls)} | flat_names(config_cls)  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise OmnikitTypeError(
            f"{model_name}: unknown override(s) {unknown}; valid overrides are {sorted(fields)}"
        )
    preset = nest_flat(config_cls, defaults)
    config = config_cls(**{**preset, **nest_flat(config_cls, overrides, base=preset)})
    validate_config(config, model_name)
    return config


def _check_overrides_against_signature(info: ModelInfo, overrides: Mapping[str, Any]) -> None:
    params = inspect.signature(info.entrypoint).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return  # the entrypoint validates its own overrides (see ``configure``)
    valid = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise OmnikitTypeError(f"{info.name}: unknown override(s) {unknown}; valid overrides are {sorted(valid)}")


def create_model(
    name: str,
    *,
    pretrained: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name (see :func:`list_models`).
        pretrained: a local directory (or ``model.safetensors`` file) written by
            :func:`omnikit.save_pretrained`; its weights are loaded strictly. No network access.
        device: where parameters are created; ``"meta"`` builds without allocating memory.
        dtype: floating dtype to cast to; modules marked ``keep_fp32`` (norms, routers) stay fp32.
        **overrides: hyper-parameters replacing the preset's (``dim=256``, ``depth=4`` ...).

    Raises:
        KeyError: unknown ``name`` (the message lists the closest registered names).
        TypeError: an override the entrypoint does not accept.
    """
    info = model_info(name)
    _check_overrides_against_signature(info, overrides)
    if pretrained is not None and device is not None and torch.device(device).type == "meta":
        raise OmnikitValueError("`pretrained` weights cannot be loaded onto device='meta'")
    if pretrained is not None:
        PRETRAINED_HOOKS["check"](lambda: info.entrypoint(**overrides), pretrained)  # on meta: nothing allocated
    with torch.device(device) if device is not None else nullcontext():
        model = info.entrypoint(**overrides)
    if not isinstance(model, nn.Module):
        raise OmnikitTypeError(f"entrypoint {name!r} returned {type(model).__name__}, expected an nn.Module")
    setattr(model, SPEC_ATTR, ModelSpec(name, info.kind, info.modalities, dict(overrides)))
    if pretrained is not None:
        PRETRAINED_HOOKS["load"](model, pretrained)
    if dtype is not None:
        cast_model(model, dtype)
    return model
