"""Training conveniences: parameter counts and gradient checkpointing switches."""

from __future__ import annotations

from torch import nn

from omnikit.utils.checks import OmnikitValueError

__all__ = ["count_parameters", "set_gradient_checkpointing"]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tied tensors counted once); works on ``device="meta"`` models."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def set_gradient_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation recomputation on every submodule that supports it; returns how many.

    A module supports it by having a boolean ``gradient_checkpointing`` attribute.
    """
    switched = 0
    for module in model.modules():
        if isinstance(getattr(module, "gradient_checkpointing", None), bool):
            module.gradient_checkpointing = enabled
            switched += 1
    if not switched:
        raise OmnikitValueError(f"{type(model).__name__} has no module that supports gradient checkpointing")
    return switched
