"""Declarative state-dict key maps: regex renames and row-wise fusion of projections."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = ["KeyRules", "fuse_state", "rename_state"]

#: ``(pattern, template)`` pairs: a key fully matching ``pattern`` becomes ``re.sub(pattern, template, key)``.
KeyRules = Sequence[tuple[str, str]]


def rename_state(state: Mapping[str, torch.Tensor], rules: KeyRules, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename every key of ``state`` (after stripping ``prefix``) by the first rule that matches it in full.

    Raises ``ValueError`` naming any key no rule matches.
    """
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            raise OmnikitValueError(f"tensor {key!r} is not under the expected prefix {prefix!r}")
        short = key[len(prefix):]
        for pattern, template in compiled:
            if pattern.fullmatch(short):
                out[pattern.sub(template, short)] = value
                break
        else:
            raise OmnikitValueError(f"unexpected tensor {key!r}: no key rule matches it")
    return out


def fuse_state(
    state: Mapping[str, torch.Tensor], pattern: str, parts: Sequence[str], target: str
) -> dict[str, torch.Tensor]:
    """Concatenate along dim 0 the tensors whose keys match ``pattern`` with ``{part}`` set to each of
    ``parts`` (in that order), stored under ``target`` (a ``re.sub`` template on the first part's match).

    For example ``(r"(.*)\\.{part}_proj\\.weight", ("q", "k", "v"), r"\\1.qkv.weight")`` fuses q/k/v
    projections. A group with a missing part raises ``ValueError`` naming the key.
    """
    first = re.compile(pattern.replace("{part}", re.escape(parts[0])))
    out = dict(state)
    for key in [k for k in state if first.fullmatch(k)]:
        match = first.fullmatch(key)
        names = [key] + [_sibling(pattern, part, match) for part in parts[1:]]
        missing = [n for n in names if n not in state]
        if missing:
            raise OmnikitValueError(f"missing tensor {missing[0]!r} (needed to fuse {names})")
        out[first.sub(target, key)] = torch.cat([out.pop(n) for n in names])
    return out


def _sibling(pattern: str, part: str, match: re.Match[str]) -> str:
    """The key that ``pattern`` with ``{part}`` matches for the same groups as ``match``."""
    text = pattern.replace("{part}", part)
    groups = iter(match.groups())
    return re.sub(r"\((?!\?)[^()]*\)", lambda _: next(groups), text).replace("\\", "")
