"""A readable module summary: a tree of submodules with their parameter counts."""

from __future__ import annotations

from torch import nn

from omnikit.utils.training import count_parameters

__all__ = ["format_count", "model_summary"]


def format_count(n: int) -> str:
    """``1234567 -> '1.23M'``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def model_summary(model: nn.Module, *, max_depth: int = 2) -> str:
    """One line per submodule down to ``max_depth``: name, class, parameters (tied counted once)."""
    rows = [(type(model).__name__, "", count_parameters(model))]
    for name, module in model.named_modules():
        depth = name.count(".") + 1
        if name and depth <= max_depth:
            rows.append(("  " * depth + name.rsplit(".", 1)[-1], type(module).__name__, count_parameters(module)))
    width = max(len(r[0]) for r in rows) + 2
    kind_width = max(len(r[1]) for r in rows) + 2
    lines = [f"{'module':<{width}}{'type':<{kind_width}}params"]
    lines += [f"{n:<{width}}{k:<{kind_width}}{format_count(p)}" for n, k, p in rows]
    return "\n".join(lines)
