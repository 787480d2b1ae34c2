"""Declarative key maps between omnikit state-dict keys and a published checkpoint's tensor names.

A :class:`KeyMap` is a tuple of rules. Each rule names an omnikit key pattern (``ours``) and the
checkpoint tensor(s) it is made of (``theirs``). Patterns hold ``{name}`` placeholders that stand
for one dot-free name component (layer ``{i}``, parameter ``{p}``); a placeholder captured from
the omnikit key is filled into the checkpoint names. ``{e}`` is the expert index of
:class:`StackExperts`.

- :class:`Rename`: one checkpoint tensor, same shape.
- :class:`Fuse`: several checkpoint tensors concatenated along ``dim`` (fused q/k/v); a ``None``
  part is zeros on load and is not written on save (a bias the checkpoint does not have).
- :class:`StackExperts`: per-expert tensors ``theirs`` (with ``{e}``) stacked along a new first
  dim, each expert's slice optionally fused from several tensors (gate and up projections).
- :class:`Skip`: checkpoint tensors that are ignored on load and never written (rotary tables).
- :class:`Legacy`: an older spelling of checkpoint names, read as the current one on load (saves
  write the current one), e.g. ``weight_g`` for ``parametrizations.weight.original0``.

:meth:`KeyMap.plan` expands the rules over a model's key shapes into :class:`Piece` lists:
``ours[piece.index] == checkpoint[piece.source]``. The same plan loads (copy each source into its
slice) and saves (slice each omnikit tensor back out), so every key map is invertible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = ["Fuse", "KeyMap", "Legacy", "Piece", "Rename", "Rule", "Skip", "StackExperts"]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

#: ``(dim, start, length)``: ``tensor.narrow(dim, start, length)``, or ``tensor.select(dim, start)``
#: when ``length`` is None.
Slice = tuple[int, int, "int | None"]


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[last:match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^.]+)")
        last = match.end()
    parts.append(re.escape(pattern[last:]))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class Piece:
    """``ours[index] == checkpoint[source]`` (``source=None``: zeros, absent from the checkpoint)."""

    source: str | None
    index: tuple[Slice, ...] = ()

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """The slice of the omnikit ``tensor`` this piece covers (a view)."""
        for dim, start, length in self.index:
            tensor = tensor.select(dim, start) if length is None else tensor.narrow(dim, start, length)
        return tensor

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The checkpoint tensor's shape for an omnikit tensor of ``shape``."""
        out = list(shape)
        for dim, _, length in self.index:
            if length is None:
                del out[dim]
            else:
                out[dim] = length
        return tuple(out)


@dataclass(frozen=True)
class Rename:
    """``ours`` is the checkpoint tensor ``theirs`` unchanged."""

    ours: str
    theirs: str

    def pieces(self, groups: Mapping[str, str], shape: Sequence[int]) -> list[Piece]:
        return [Piece(self.theirs.format(**groups))]

    def prefixed(self, prefix: str) -> Rename:
        return replace(self, theirs=prefix + self.theirs)


def _fused(theirs: Sequence[str | None], sizes: Sequence[int], dim: int, groups: Mapping[str, str],
           total: int, ours: str, outer: tuple[Slice, ...] = ()) -> list[Piece]:
    if len(theirs) != len(sizes) or sum(sizes) != total:
        raise OmnikitValueError(
            f"key map for {ours!r}: parts of sizes {tuple(sizes)} do not fill dim {dim} of size {total}"
        )
    pieces, start = [], 0
    for name, size in zip(theirs, sizes):
        pieces.append(Piece(None if name is None else name.format(**groups), (*outer, (dim, start, size))))
        start += size
    return pieces


@dataclass(frozen=True)
class Fuse:
    """``ours = cat(theirs, dim)`` with part sizes ``sizes``; a ``None`` part is zeros."""

    ours: str
    theirs: tuple[str | None, ...]
    sizes: tuple[int, ...]
    dim: int = 0

    def pieces(self, groups: Mapping[str, str], shape: Sequence[int]) -> list[Piece]:
        return _fused(self.theirs, self.sizes, self.dim, groups, shape[self.dim], self.ours)

    def prefixed(self, prefix: str) -> Fuse:
        return replace(self, theirs=tuple(None if t is None else prefix + t for t in self.theirs))


@dataclass(frozen=True)
class StackExperts:
    """``ours[e] = cat([t.format(e=e) for t in theirs], dim)``: per-expert tensors stacked to 3-D.

    ``ours``'s first dim is the number of experts. With one ``theirs`` name, ``sizes`` may be empty.
    ``stacked`` names the one 3-D tensor an instantiated transformers module holds instead (its
    ``state_dict()``, read by :meth:`KeyMap.in_memory`; checkpoints store the experts one by one).
    """

    ours: str
    theirs: tuple[str, ...]
    sizes: tuple[int, ...] = ()
    dim: int = 0
    stacked: str | None = None

    def pieces(self, groups: Mapping[str, str], shape: Sequence[int]) -> list[Piece]:
        pieces: list[Piece] = []
        for e in range(shape[0]):
            expert = {**groups, "e": str(e)}
            if len(self.theirs) == 1 and not self.sizes:
                pieces.append(Piece(self.theirs[0].format(**expert), ((0, e, None),)))
            else:
                pieces += _fused(self.theirs, self.sizes, self.dim, expert, shape[1 + self.dim], self.ours,
                                 outer=((0, e, None),))
        return pieces

    def prefixed(self, prefix: str) -> StackExperts:
        stacked = None if self.stacked is None else prefix + self.stacked
        return replace(self, theirs=tuple(prefix + t for t in self.theirs), stacked=stacked)


@dataclass(frozen=True)
class Skip:
    """Checkpoint tensors matching ``theirs`` are ignored on load and never written."""

    theirs: str

    def prefixed(self, prefix: str) -> Skip:
        return replace(self, theirs=prefix + self.theirs)


@dataclass(frozen=True)
class Legacy:
    """Checkpoint names matching ``old`` are read as ``new`` (same placeholders) on load."""

    old: str
    new: str

    def prefixed(self, prefix: str) -> Legacy:
        return replace(self, old=prefix + self.old, new=prefix + self.new)


Rule = Rename | Fuse | StackExperts | Skip | Legacy
_NOT_MAPPING = (Skip, Legacy)


@dataclass(frozen=True)
class KeyMap:
    """An ordered tuple of rules; the first rule whose ``ours`` pattern matches a key maps it."""

    rules: tuple[Rule, ...]

    def __add__(self, other: KeyMap) -> KeyMap:
        return KeyMap(self.rules + other.rules)

    def prefixed(self, prefix: str) -> KeyMap:
        """The same map with ``prefix`` prepended to every checkpoint name."""
        return KeyMap(tuple(rule.prefixed(prefix) for rule in self.rules)) if prefix else self

    def under(self, prefix: str) -> KeyMap:
        """The same map with ``prefix`` prepended to every omnikit key (a submodule's map reused)."""
        return KeyMap(tuple(rule if isinstance(rule, _NOT_MAPPING) else replace(rule, ours=prefix + rule.ours)
                            for rule in self.rules))

    def in_memory(self) -> KeyMap:
        """The map of an instantiated transformers module's ``state_dict()``: experts read from their
        ``stacked`` 3-D tensors."""
        return KeyMap(tuple(Rename(r.ours, r.stacked) if isinstance(r, StackExperts) and r.stacked else r
                            for r in self.rules))

    def skipped(self, key: str) -> bool:
        """True when the checkpoint tensor ``key`` is ignored."""
        return any(_compile(r.theirs).fullmatch(key) for r in self.rules if isinstance(r, Skip))

    def current_names(self, names: Iterable[str]) -> dict[str, str]:
        """``{current name: name as stored}`` for the checkpoint ``names`` a :class:`Legacy` rule renames."""
        renamed: dict[str, str] = {}
        legacy = [r for r in self.rules if isinstance(r, Legacy)]
        for name in names:
            for rule in legacy:
                match = _compile(rule.old).fullmatch(name)
                if match is not None:
                    renamed[rule.new.format(**match.groupdict())] = name
                    break
        return renamed

    def plan(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, list[Piece]]:
        """Expand the rules over omnikit ``{key: shape}``: ``{key: pieces}``.

        Raises ``OmnikitValueError`` naming an omnikit key no rule maps.
        """
        plan: dict[str, list[Piece]] = {}
        mapping = [r for r in self.rules if not isinstance(r, _NOT_MAPPING)]
        for key, shape in shapes.items():
            for rule in mapping:
                match = _compile(rule.ours).fullmatch(key)
                if match is not None:
                    plan[key] = rule.pieces(match.groupdict(), tuple(shape))
                    break
            else:
                raise OmnikitValueError(f"omnikit key {key!r} has no rule in the architecture's key map")
        return plan

    def gather(
        self, source: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]
    ) -> dict[str, torch.Tensor]:
        """Omnikit tensors of ``shapes`` assembled from in-memory checkpoint tensors ``source`` (a
        transformers module's state dict); checkpoint tensors no rule uses are ignored."""
        state: dict[str, torch.Tensor] = {}
        for key, pieces in self.plan(shapes).items():
            absent = sorted(p.source for p in pieces if p.source is not None and p.source not in source)
            if absent:
                raise OmnikitValueError(f"omnikit key {key!r} needs tensors the source lacks: {absent}")
            if len(pieces) == 1 and not pieces[0].index:
                state[key] = source[pieces[0].source]
                continue
            present = next(source[p.source] for p in pieces if p.source is not None)
            state[key] = present.new_zeros(tuple(shapes[key]))
            for piece in pieces:
                if piece.source is not None:
                    piece.view(state[key]).copy_(source[piece.source])
        return state
