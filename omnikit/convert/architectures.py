"""The one registry of published architectures: :func:`load_hf`, :func:`save_hf` and
:func:`from_transformers` all read it.

An architecture is the name in ``config.json``'s ``architectures`` list (``"Qwen3ForCausalLM"``)
and a set of named :class:`Part` s. Each part says how to build the omnikit module from the
config and which checkpoint tensors it is made of (a declarative :class:`~omnikit.convert.keymap.KeyMap`
under a name prefix). A :class:`Mapped` module declares the three maps once (config map, builder,
key map); :meth:`Mapped.part` makes the :class:`Part` ``load_hf`` / ``save_hf`` use, and
:func:`register_transformers` lets ``from_transformers`` convert the transformers class of the
same module with the same maps (its ``state_dict()`` read through the key map). Built-in
architectures live in ``omnikit/convert/hub_*.py`` (one file per family) and are imported on first
use through :data:`BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnikit.convert.keymap import KeyMap
from omnikit.registry import create_model
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.utils.precision import cast_model

__all__ = [
    "BUILTIN_MODULES",
    "HF_ORIGIN_ATTR",
    "Architecture",
    "HubOrigin",
    "Mapped",
    "Part",
    "convert_transformers",
    "exporter",
    "get_architecture",
    "origin_of",
    "preset",
    "register_architecture",
    "register_transformers",
    "supported_architectures",
    "supported_transformers_classes",
]

#: Architecture name -> module whose import registers it.
BUILTIN_MODULES: dict[str, str] = {
    "Qwen3ForCausalLM": "omnikit.convert.hub_qwen",
    "Qwen2ForCausalLM": "omnikit.convert.hub_qwen",
    "Qwen3MoeForCausalLM": "omnikit.convert.hub_qwen",
    "WhisperForConditionalGeneration": "omnikit.convert.hub_whisper",
    "WhisperModel": "omnikit.convert.hub_whisper",
    "EncodecModel": "omnikit.convert.hub_encodec",
    "MimiModel": "omnikit.convert.hub_mimi",
    "MoshiForConditionalGeneration": "omnikit.convert.hub_moshi",
    "DacModel": "omnikit.convert.hub_dac",
    "Wav2Vec2Model": "omnikit.convert.hub_wav2vec2",
    "Wav2Vec2ForCTC": "omnikit.convert.hub_wav2vec2",
    "Wav2Vec2ForPreTraining": "omnikit.convert.hub_wav2vec2",
    "Qwen2_5OmniThinkerForConditionalGeneration": "omnikit.convert.hub_qwen2_5_omni",
    "Qwen2_5OmniForConditionalGeneration": "omnikit.convert.hub_qwen2_5_omni",
    "Qwen3OmniMoeForConditionalGeneration": "omnikit.convert.hub_qwen3_omni",
    "Qwen3OmniMoeThinkerForConditionalGeneration": "omnikit.convert.hub_qwen3_omni",
    "Gemma4ForCausalLM": "omnikit.convert.hub_gemma4",
    "Gemma4ForConditionalGeneration": "omnikit.convert.hub_gemma4",
    "Qwen3NextForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5ForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5MoeForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5ForConditionalGeneration": "omnikit.convert.hub_qwen3_5_vl",
    "Qwen3_5MoeForConditionalGeneration": "omnikit.convert.hub_qwen3_5_vl",
}

#: Attribute :func:`load_hf` sets on the models it returns (a :class:`HubOrigin`).
HF_ORIGIN_ATTR = "hf_origin"

Config = dict[str, Any]


@dataclass(frozen=True)
class Part:
    """One loadable component of an architecture.

    Attributes:
        build: ``config -> nn.Module``; :func:`load_hf` calls it with parameters created on the
            meta device (buffers are real), so it must not read parameter values.
        key_map: ``config -> KeyMap`` with checkpoint names relative to ``prefix``.
        prefix: checkpoint name prefix of the part (``"thinker.audio_tower."``).
        owns: checkpoint name prefixes whose tensors the part must consume (default ``(prefix,)``);
            a tensor there that no rule uses is an unexpected key, and only the shards holding
            these names are opened.
        inputs: ``(model, processor outputs) -> forward kwargs`` for :func:`hf_inputs`.
        export_config: ``model -> config.json dict`` for :func:`save_hf` on a model that was not
            loaded from a checkpoint (built by ``create_model``, say).
        finish: ``(model, snapshot directory) -> None``, run by :func:`load_hf` after the tensors are in
            place (to read a side file of the snapshot, such as speaker tables).
    """

    build: Callable[[Config], nn.Module]
    key_map: Callable[[Config], KeyMap]
    prefix: str = ""
    owns: tuple[str, ...] | None = None
    inputs: Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]] | None = None
    export_config: Callable[[nn.Module], Config] | None = None
    finish: Callable[[nn.Module, Path], None] | None = None

    @property
    def owned_prefixes(self) -> tuple[str, ...]:
        return self.owns if self.owns is not None else (self.prefix,)


def _whole(config: Config) -> Config:
    return config


@dataclass(frozen=True)
class Mapped:
    """A module declared by maps, read alike by ``load_hf``, ``save_hf`` and ``from_transformers``.

    Attributes:
        config: ``config.json dict -> omnikit config`` (a :class:`~omnikit.convert.configmap.ConfigMap`).
        build: ``omnikit config -> nn.Module`` (e.g. :func:`preset`); must not read parameter values.
        key_map: ``omnikit config -> KeyMap``, checkpoint names relative to the module.
        export: ``model -> config.json dict`` (``None`` when ``model`` is not of this layout), for
            ``save_hf`` of a model that was not loaded.
    """

    config: Callable[[Config], Any]
    build: Callable[[Any], nn.Module]
    key_map: Callable[[Any], KeyMap]
    export: Callable[[nn.Module], Config | None] | None = None

    def part(self, prefix: str = "", *, select: Callable[[Config], Config] = _whole,
             owns: tuple[str, ...] | None = None,
             inputs: Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]] | None = None,
             exported: bool = True) -> Part:
        """The :class:`Part` of this module under checkpoint ``prefix``, its config being
        ``select(config.json dict)`` (``lambda c: c["thinker_config"]`` for a nested one);
        ``exported=False`` leaves :attr:`export` out (``save_hf`` then needs a loaded model)."""
        return Part(lambda c: self.build(self.config(select(c))), lambda c: self.key_map(self.config(select(c))),
                    prefix, owns, inputs, self.export if exported else None)


def preset(name: str) -> Callable[[Any], nn.Module]:
    """``config -> create_model(name, **fields)``: a :attr:`Mapped.build` through a registered preset
    (the model remembers it, so ``omnikit.save_pretrained`` writes it); ``config`` is a mapping of
    fields or a config dataclass."""
    return lambda config: create_model(name, **(config if isinstance(config, Mapping) else asdict(config)))


def exporter(cmap: Callable[[Any], Config | None], module_type: type, architecture: str,
             config_of: Callable[[Any], Any] = lambda model: model.config) -> Callable[[nn.Module], Config | None]:
    """A :attr:`Mapped.export`: ``{"architectures": [architecture], **cmap.write(config_of(model))}`` for a
    ``module_type`` model (``cmap`` a :class:`~omnikit.convert.configmap.ConfigMap`'s ``write``), ``None``
    for any other model or a config the map does not fit."""
    def export(model: nn.Module) -> Config | None:
        config = cmap(config_of(model)) if isinstance(model, module_type) else None
        return None if config is None else {"architectures": [architecture], **config}

    return export


@dataclass(frozen=True)
class Architecture:
    """A published architecture: its parts and the part loaded when none is named."""

    name: str
    parts: Mapping[str, Part]
    default_part: str | None = None

    def part(self, name: str | None) -> tuple[str, Part]:
        """``(name, Part)`` for ``name`` (``None``: the default part)."""
        name = self.default_part if name is None else name
        if name is None:
            raise OmnikitValueError(f"`part` must be given for {self.name}; its parts: {sorted(self.parts)}")
        if name not in self.parts:
            raise OmnikitValueError(f"`part` {name!r} is not a part of {self.name}; its parts: {sorted(self.parts)}")
        return name, self.parts[name]


@dataclass
class HubOrigin:
    """Where a model returned by :func:`load_hf` came from (kept for :func:`save_hf`/:func:`hf_inputs`)."""

    architecture: str
    part: str
    config: Config = field(repr=False)


_ARCHITECTURES: dict[str, Architecture] = {}
#: transformers class name -> ``hf_module -> omnikit module``.
_TRANSFORMERS: dict[str, Callable[[nn.Module], nn.Module]] = {}


def register_architecture(name: str, *, parts: Mapping[str, Part], default_part: str | None = None) -> Architecture:
    """Register the published architecture ``name`` (as written in ``config.json``).

    ``default_part`` is loaded by ``load_hf(path)`` without ``part=``; ``None`` makes ``part``
    required. A duplicate name is an error.
    """
    if name in _ARCHITECTURES:
        raise OmnikitValueError(f"architecture {name!r} is already registered")
    if default_part is not None and default_part not in parts:
        raise OmnikitValueError(f"`default_part` {default_part!r} is not one of the parts {sorted(parts)}")
    architecture = Architecture(name, dict(parts), default_part)
    _ARCHITECTURES[name] = architecture
    return architecture


def supported_architectures() -> list[str]:
    """Names of the architectures :func:`load_hf` loads."""
    return sorted(set(BUILTIN_MODULES) | set(_ARCHITECTURES))


def get_architecture(name: str) -> Architecture:
    """The registered :class:`Architecture` ``name``; ``ValueError`` listing the supported ones."""
    if name not in _ARCHITECTURES and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
    if name not in _ARCHITECTURES:
        raise OmnikitValueError(
            f"architecture {name!r} is not supported by load_hf; supported: {supported_architectures()}"
        )
    return _ARCHITECTURES[name]


def origin_of(model: nn.Module) -> tuple[HubOrigin, Part]:
    """The architecture part ``model`` belongs to: where :func:`load_hf` loaded it from, or else the
    first registered part whose ``export_config`` accepts it."""
    origin = getattr(model, HF_ORIGIN_ATTR, None)
    if isinstance(origin, HubOrigin):
        return origin, get_architecture(origin.architecture).parts[origin.part]
    for name in sorted(BUILTIN_MODULES):
        for part_name, part in get_architecture(name).parts.items():
            config = part.export_config(model) if part.export_config is not None else None
            if config is not None and config.get("architectures") == [name]:
                return HubOrigin(name, part_name, config), part
    raise OmnikitValueError(
        f"`model` ({type(model).__name__}) was not loaded by load_hf and no architecture exports its config"
    )


def _module_config(hf_module: nn.Module) -> Config:
    return hf_module.config.to_dict()


@torch.no_grad()
def convert_transformers(hf_module: nn.Module, mapped: Mapped,
                         config_of: Callable[[nn.Module], Config] = _module_config) -> nn.Module:
    """``mapped`` built from ``config_of(hf_module)`` on its device, loaded strictly with the tensors
    its key map gathers from ``hf_module.state_dict()``, cast to its dtype, in its train/eval mode."""
    reference = next(hf_module.parameters())
    config = mapped.config(config_of(hf_module))
    with torch.device(reference.device):
        model = mapped.build(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(mapped.key_map(config).in_memory().gather(hf_module.state_dict(), shapes), strict=True)
    if reference.dtype != torch.float32:
        cast_model(model, reference.dtype)
    return model.train(hf_module.training)


def register_transformers(class_name: str, converter: Mapped | Callable[[nn.Module], nn.Module],
                          config_of: Callable[[nn.Module], Config] = _module_config) -> None:
    """Let :func:`~omnikit.convert.from_transformers` convert instances of the transformers class
    ``class_name``: through the maps of ``converter`` (a :class:`Mapped`, its config read by
    ``config_of(module)``, default ``module.config.to_dict()``) or a plain ``module -> module`` function."""
    _TRANSFORMERS[class_name] = (
        (lambda module: convert_transformers(module, converter, config_of)) if isinstance(converter, Mapped)
        else converter
    )


def _import_builtins() -> None:
    for module in sorted(set(BUILTIN_MODULES.values())):
        importlib.import_module(module)


def supported_transformers_classes() -> list[str]:
    """Names of the transformers classes :func:`~omnikit.convert.from_transformers` accepts."""
    _import_builtins()
    return sorted(_TRANSFORMERS)


def transformers_converter(hf_module: nn.Module) -> Callable[[nn.Module], nn.Module]:
    """The registered conversion of ``hf_module``'s class; ``TypeError`` listing the supported ones."""
    name = type(hf_module).__name__
    if name not in _TRANSFORMERS:
        _import_builtins()
    if name not in _TRANSFORMERS:
        raise OmnikitTypeError(
            f"`hf_module` of class {name} has no omnikit converter; supported: {supported_transformers_classes()}"
        )
    return _TRANSFORMERS[name]
