"""Parallel plans as data: what a module declares so that :func:`omnikit.distributed.parallelize` can wrap it.

A class declares its own part with a ``parallel_plan(self) -> ParallelPlan`` method, beside its
``forward``; :mod:`omnikit.distributed` (the strategies) walks the model, joins the parts and
turns the tensor-parallel roles below into DTensor styles. A plan names, relative to its module:

- ``fsdp_units``: submodules sharded by FSDP2 one by one, before the root;
- ``tp``: ``{submodule path: role}``, a :class:`TPRole` (or a ``ParallelStyle`` object);
- ``experts``: expert modules (:class:`omnikit.moe.SwiGLUExperts`) run expert-parallel;
- ``tied``: ``(path, source)`` parameters that share a tensor, tied again after tensor parallel;
- ``fsdp_methods``: ``(module, method name)``: methods other than ``forward`` through which a
  module is called (a vision tower's ``forward_patches``), hooked by FSDP2 as its forward is.

Roles (``TPRole(kind, args)``) keep this floor free of ``torch.distributed``: ``COLWISE`` /
``ROWWISE`` linear layers, ``VOCAB_EMBED`` / ``VOCAB_HEAD`` (vocabulary-sharded, replicated
activations), ``head_qkv(heads, kv_heads, head_dim)`` (a fused q/k/v projection split by heads),
``HEAD_NORM`` (a per-head norm replicated, its gradients all-reduced) and ``expert_hidden(hidden)``
(grouped experts split over their hidden width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["COLWISE", "HEAD_NORM", "ROWWISE", "VOCAB_EMBED", "VOCAB_HEAD", "ParallelPlan", "TPRole",
           "expert_hidden", "head_qkv"]


@dataclass(frozen=True)
class TPRole:
    """A tensor-parallel role: ``kind`` and its integer arguments (see the module docstring)."""

    kind: str
    args: tuple[int, ...] = ()


COLWISE, ROWWISE = TPRole("colwise"), TPRole("rowwise")
VOCAB_EMBED, VOCAB_HEAD = TPRole("vocab_embed"), TPRole("vocab_head")
HEAD_NORM = TPRole("head_norm")


def head_qkv(num_heads: int, num_kv_heads: int, head_dim: int) -> TPRole:
    """A fused q/k/v projection split by heads (each rank: its query heads and their kv groups)."""
    return TPRole("head_qkv", (num_heads, num_kv_heads, head_dim))


def expert_hidden(hidden: int) -> TPRole:
    """Grouped experts split over their hidden width ``hidden``."""
    return TPRole("expert_hidden", (hidden,))


@dataclass
class ParallelPlan:
    """The parallel layout one module declares (paths relative to it); see the module docstring."""

    fsdp_units: list[Any] = field(default_factory=list)
    tp: dict[str, Any] = field(default_factory=dict)
    experts: list[Any] = field(default_factory=list)
    tied: list[tuple[str, str]] = field(default_factory=list)
    fsdp_methods: list[tuple[Any, str]] = field(default_factory=list)

    def join(self, other: ParallelPlan, prefix: str = "") -> ParallelPlan:
        """This plan plus ``other`` declared by the submodule at ``prefix`` (``""``: the same module)."""
        dotted = f"{prefix}." if prefix else ""
        return ParallelPlan(
            fsdp_units=self.fsdp_units + [m for m in other.fsdp_units if m not in self.fsdp_units],
            tp={**self.tp, **{dotted + path: style for path, style in other.tp.items()}},
            experts=self.experts + [m for m in other.experts if m not in self.experts],
            tied=self.tied + [(dotted + a, dotted + b) for a, b in other.tied],
            fsdp_methods=self.fsdp_methods + [m for m in other.fsdp_methods if m not in self.fsdp_methods],
        )
