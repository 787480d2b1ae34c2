"""The audio-visual relation tasks of ``examples/relation_tasks.py``: data that needs both media, and short
training runs of the registered tiny fusion models that must beat chance clearly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from relation_data import TASKS, make_batch, swap_media
from relation_tasks import Recipe, train


@pytest.mark.parametrize("task", TASKS)
def test_relation_data_needs_both_media(task: str) -> None:
    """Balanced labels, and neither medium's own content predicts the label (each part's rate of yes ~ 0.5)."""
    batch = make_batch(task, 1500, torch.Generator().manual_seed(0))
    assert batch["frames"].shape == (1500, 8, 3, 8, 8) and batch["mels"].shape == (1500, 16, 100)
    assert abs(batch["label"].float().mean() - 0.5) < 0.05
    for part in ("video_part", "audio_part"):
        for value in batch[part].unique():
            assert abs(batch["label"][batch[part] == value].float().mean() - 0.5) < 0.09
    swapped = swap_media(batch, "audio")
    assert torch.equal(swapped["mels"][1], batch["mels"][0]) and torch.equal(swapped["frames"], batch["frames"])


def test_relation_labels_follow_the_media() -> None:
    """The place label is exactly whether the loudest band points to the brightest quadrant."""
    batch = make_batch("place", 256, torch.Generator().manual_seed(1))
    image = batch["frames"].sum((1, 2))  # (n, 8, 8)
    quadrant = torch.stack([image[:, :4, :4], image[:, :4, 4:], image[:, 4:, :4], image[:, 4:, 4:]], 1)
    band = batch["mels"].view(256, 4, 4, 100).sum((2, 3)).argmax(1)
    assert torch.equal(quadrant.sum((2, 3)).argmax(1), batch["video_part"])
    assert torch.equal(band, batch["audio_part"])
    assert torch.equal((band == batch["video_part"]).long(), batch["label"])


@pytest.mark.slow
def test_early_fusion_learns_the_place_relation() -> None:
    """The registered ``omni_early_tiny`` with the documented recipe (400 steps of batch 64, half the rows
    asking a perception question) beats chance clearly on held-out clips; swapping the audio between
    samples brings it back to chance. About 100 s on one idle core (docs/fusion.md has the curves)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train("early", "place", Recipe(steps=400), seed=0, every=400)
    finally:
        torch.set_num_threads(threads)
    assert result["accuracy"] >= 0.75, result
    assert abs(result["audio_swapped"] - 0.5) < 0.05, result
