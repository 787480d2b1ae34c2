"""A loadable part made of other parts: the whole model of a published omni checkpoint.

``whole_part(build, {"thinker": thinker_part, "talker": talker_part, ...})`` is a :class:`Part` whose module
holds each member part's module as the attribute of that name; its key map is the members' key maps, each
under its attribute and its checkpoint prefix, and it owns exactly the members' tensors (so checkpoint
tensors of a component that is not built, such as a vocoder omnikit lacks, are left alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Part
from omnikit.convert.keymap import KeyMap
from omnikit.utils.checks import OmnikitValueError

__all__ = ["check_same_layout", "check_speaks", "whole_part"]


def whole_part(
    build: Callable[[Config], nn.Module],
    members: Mapping[str, Part],
    *,
    inputs: Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]] | None = None,
    finish: Callable[[nn.Module, Path], None] | None = None,
) -> Part:
    """The :class:`Part` of ``build(config)``, whose attribute ``name`` is ``members[name]``'s module."""

    def key_map(config: Config) -> KeyMap:
        maps = [part.key_map(config).prefixed(part.prefix).under(f"{name}.") for name, part in members.items()]
        return sum(maps[1:], maps[0])

    owned = tuple(prefix for part in members.values() for prefix in part.owned_prefixes)
    return Part(build, key_map, "", owns=owned, inputs=inputs, finish=finish)


def check_same_layout(thinker: Config, talker: Config, defaults: Mapping[str, Any]) -> None:
    """The Talker reads the Thinker's prompt layout with the Thinker's TMRoPE scheme: ``ValueError`` unless the
    two configs agree on every key of ``defaults`` (placeholder ids, position ids per second; the value in
    ``defaults`` stands for an absent key)."""
    for key, default in defaults.items():
        if thinker.get(key, default) != talker.get(key, default):
            raise OmnikitValueError(
                f"talker_config.{key} ({talker.get(key, default)}) must equal thinker_config.{key} "
                f"({thinker.get(key, default)}): the Talker's positions are computed with the Thinker's layout"
            )


def check_speaks(config: Config) -> None:
    """``ValueError`` unless the omni ``config`` has its Talker (``enable_audio_output`` and a ``talker_config``)."""
    if not config.get("enable_audio_output", True) or "talker_config" not in config:
        raise OmnikitValueError(
            "part 'omni' needs a checkpoint with a Talker (its config has enable_audio_output false)"
        )
