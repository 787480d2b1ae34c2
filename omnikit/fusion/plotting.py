"""Pictures of a multimodal sequence: the token layout by modality and its TMRoPE ids (matplotlib, lazy)."""

from __future__ import annotations

from pathlib import Path

import torch

from omnikit.fusion.modality import MODALITIES, MediaTokens
from omnikit.utils.checks import check_tensor
from omnikit.utils.deps import new_figure

__all__ = ["plot_token_layout"]

_COLOURS = {"text": "#9e9e9e", "image": "#1f77b4", "video": "#2ca02c", "audio": "#d62728"}


def plot_token_layout(
    input_ids: torch.Tensor, positions: torch.Tensor, media_tokens: MediaTokens, path: str | Path, *, title: str = ""
) -> Path:
    """Save a two-panel figure: the modality of every token, and its ``(t, h, w)`` position ids.

    Args:
        input_ids: ``(T,)`` one sequence.
        positions: ``(3, T)`` its TMRoPE ids (from :func:`tmrope_position_ids`).
        media_tokens: the placeholder ids.
        path: where to write the image (any matplotlib format).
    """
    from matplotlib.patches import Patch

    check_tensor(input_ids, "input_ids", ndim=1, floating=False)
    check_tensor(positions, "positions", shape=(3, input_ids.shape[0]))
    kinds = media_tokens.modality_ids(input_ids).tolist()
    steps = range(len(kinds))
    fig = new_figure(figsize=(max(8.0, len(kinds) / 8), 4.6))
    ax_layout, ax_pos = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 4]})
    ax_layout.bar(steps, 1, width=1.0, color=[_COLOURS[MODALITIES[k]] for k in kinds])
    ax_layout.set_yticks([])
    ax_layout.legend(handles=[Patch(color=c, label=m) for m, c in _COLOURS.items()], ncol=4, loc="upper center",
                     bbox_to_anchor=(0.5, 1.9), frameon=False)
    for axis, (label, marker) in enumerate((("t", "o"), ("h", "^"), ("w", "s"))):
        ax_pos.plot(steps, positions[axis].float().tolist(), marker=marker, markersize=3, linewidth=0.8, label=label)
    ax_pos.set(xlabel="token index", ylabel="position id")
    ax_pos.legend(loc="upper left")
    ax_pos.grid(alpha=0.3)
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out
