"""The registry of published architectures :func:`omnikit.convert.load_hf` knows.

An architecture is the name in ``config.json``'s ``architectures`` list (``"Qwen3ForCausalLM"``)
and a set of named :class:`Part` s. Each part says how to build the omnikit module from the
config and which checkpoint tensors it is made of (a declarative :class:`~omnikit.convert.keymap.KeyMap`
under a name prefix). Built-in architectures live in ``omnikit/convert/hub_*.py`` and are imported
on first use through :data:`BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from omnikit.convert.keymap import KeyMap
from omnikit.utils.checks import OmnikitValueError

__all__ = [
    "BUILTIN_MODULES",
    "HF_ORIGIN_ATTR",
    "Architecture",
    "HubOrigin",
    "Part",
    "get_architecture",
    "origin_of",
    "register_architecture",
    "supported_architectures",
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
    "Qwen2_5OmniThinkerForConditionalGeneration": "omnikit.convert.hub_qwen2_5_omni",
    "Qwen2_5OmniForConditionalGeneration": "omnikit.convert.hub_qwen2_5_omni",
    "Qwen3OmniMoeForConditionalGeneration": "omnikit.convert.hub_qwen3_omni",
    "Qwen3NextForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5ForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5MoeForCausalLM": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5ForConditionalGeneration": "omnikit.convert.hub_qwen3_next",
    "Qwen3_5MoeForConditionalGeneration": "omnikit.convert.hub_qwen3_next",
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
    """

    build: Callable[[Config], nn.Module]
    key_map: Callable[[Config], KeyMap]
    prefix: str = ""
    owns: tuple[str, ...] | None = None
    inputs: Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]] | None = None
    export_config: Callable[[nn.Module], Config] | None = None

    @property
    def owned_prefixes(self) -> tuple[str, ...]:
        return self.owns if self.owns is not None else (self.prefix,)


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
