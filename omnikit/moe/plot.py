"""Expert-load plots (matplotlib is imported only when plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from omnikit.utils.checks import OmnikitValueError, check_tensor
from omnikit.utils.deps import new_figure

__all__ = ["plot_expert_load"]


def plot_expert_load(
    tokens_per_expert: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    title: str = "Expert load",
) -> Path:
    """Save a bar chart of each expert's share of the routed rows; one bar group per series.

    Args:
        tokens_per_expert: ``(E,)`` counts (``MoEAux.tokens_per_expert``), or ``(L, E)`` / a list
            of ``(E,)`` counts, one series per layer or setting.
        path: image file to write (format from the suffix).
        labels: a legend entry per series.

    A dashed line marks the uniform share ``1 / E``. Returns ``path``.
    """
    counts = torch.stack(list(tokens_per_expert)) if not isinstance(tokens_per_expert, torch.Tensor) \
        else tokens_per_expert
    check_tensor(counts, "tokens_per_expert", ndim=(1, 2))
    counts = counts.detach().float().cpu().reshape(-1, counts.shape[-1])
    if labels is not None and len(labels) != counts.shape[0]:
        raise OmnikitValueError(f"`labels` expected {counts.shape[0]} entries but got {len(labels)}")
    share = counts / counts.sum(dim=-1, keepdim=True).clamp(min=1)
    series, experts = share.shape
    width = 0.8 / series
    fig = new_figure(figsize=(max(6.0, experts * 0.12 * series), 3.5))
    ax = fig.subplots()
    for i, row in enumerate(share):
        label = labels[i] if labels is not None else None
        ax.bar(torch.arange(experts).float() + i * width, row.numpy(), width=width, label=label)
    ax.axhline(1 / experts, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set_xlabel("expert")
    ax.set_ylabel("share of routed tokens")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
