"""Figures: the change-score curve with the sampled frames, and a contact sheet of a clip (matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from omnikit.utils.deps import new_figure
from omnikit.video.clip import Clip

__all__ = ["plot_contact_sheet", "plot_sampling"]


def plot_sampling(
    scores: np.ndarray,
    chosen: Sequence[int],
    path: str | os.PathLike,
    *,
    cuts: Sequence[int] = (),
    fps: float | None = None,
    title: str = "frame change and sampled frames",
) -> None:
    """Save a plot of per-frame ``scores`` with detected ``cuts`` (dashed) and ``chosen`` frames (ticks).

    The x axis is seconds when ``fps`` is given, frame numbers otherwise.
    """
    scale = 1.0 / fps if fps else 1.0
    x = np.arange(len(scores)) * scale
    fig = new_figure(figsize=(10, 3))
    ax = fig.subplots()
    ax.plot(x, scores, lw=1, color="tab:blue", label="cut score")
    for k, c in enumerate(cuts):
        ax.axvline(c * scale, color="tab:red", ls="--", lw=1, label="detected cut" if k == 0 else None)
    chosen = np.asarray(chosen, dtype=np.int64)
    ax.plot(chosen * scale, np.zeros_like(chosen, dtype=float), "|", ms=18, mew=2, color="tab:green",
            label="sampled frame")
    ax.set_xlabel("seconds" if fps else "frame")
    ax.set_ylabel("change")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_contact_sheet(clip: Clip, path: str | os.PathLike, *, columns: int = 6, title: str | None = None) -> None:
    """Save a grid of the clip's frames, each labelled with its frame index and timestamp."""
    count = len(clip)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    height, width = clip.frames.shape[-2:]
    fig = new_figure(figsize=(2.2 * columns, 2.2 * rows * height / width + 0.4))
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < count:
            ax.imshow(clip.frames[k].permute(1, 2, 0).numpy())
            ax.set_title(f"#{int(clip.indices[k])}  {float(clip.timestamps[k]):.2f}s", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
