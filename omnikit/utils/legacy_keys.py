"""Older state-dict layouts read as the current one.

A module whose parameters moved (``video.*`` became ``adapters.video.*``) declares the move as a
class attribute ``legacy_state_prefixes = {"video.": "adapters.video."}`` (old prefix -> new
prefix, relative to the module). :func:`legacy_key_renames` finds the moves of every submodule
of a model, so :mod:`omnikit.checkpoint` checks and loads a checkpoint written in the old layout;
:func:`rename_legacy_keys` does the same inside ``nn.Module._load_from_state_dict``, so a plain
``model.load_state_dict(old_state)`` works too. Names that are current are never renamed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

from torch import nn

__all__ = ["legacy_key_renames", "rename_legacy_keys"]


def _renamed(name: str, rules: Iterable[tuple[str, str]]) -> str | None:
    for old, new in rules:
        if name.startswith(old):
            return new + name[len(old):]
    return None


def legacy_key_renames(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """``{stored name: current name}`` for the ``names`` (a checkpoint's) that an older layout of
    ``model``'s submodules spelled differently; current names and names no rule matches are left out."""
    rules = [
        (f"{prefix}.{old}" if prefix else old, f"{prefix}.{new}" if prefix else new)
        for prefix, module in model.named_modules()
        for old, new in getattr(module, "legacy_state_prefixes", {}).items()
    ]
    if not rules:
        return {}
    current = set(model.state_dict())
    renames = {}
    for name in names:
        if name not in current and (new := _renamed(name, rules)) is not None:
            renames[name] = new
    return renames


def rename_legacy_keys(state: MutableMapping[str, object], prefix: str, prefixes: Mapping[str, str]) -> None:
    """Rename, in place, the keys of ``state`` under ``prefix`` that start with an old prefix of
    ``prefixes`` (``{old: new}``, relative to ``prefix``) unless the new spelling is already there."""
    rules = [(prefix + old, prefix + new) for old, new in prefixes.items()]
    for name in [k for k in state if k.startswith(prefix)]:
        new = _renamed(name, rules)
        if new is not None and new not in state:
            state[new] = state.pop(name)
