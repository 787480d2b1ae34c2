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

__all__ = ["whole_part"]


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
