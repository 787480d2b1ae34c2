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
@pytest.mark.parametrize("style", ["early", "xattn"])
@pytest.mark.parametrize("task", TASKS)
def test_short_run_beats_chance(style: str, task: str) -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(style, task, Recipe(steps=STEPS[style], batch_size=32), test_size=256, every=STEPS[style])
    finally:
        torch.set_num_threads(threads)
    assert result["accuracy"] >= 0.75, result


STEPS = {"early": 300, "xattn": 300}
