"""The audio-visual relation tasks of ``examples/relation_tasks.py``: data that needs both media, and short
training runs of the registered tiny fusion models that must beat chance clearly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from relation_data import TASKS, make_batch, swap_media
from relation_tasks import (
    ASK_AUDIO,
    ASK_VIDEO,
    QUESTION,
    Recipe,
    answer_logits,
    build,
    early_ids,
    lr_factor,
    runs,
    train,
    training_questions,
)


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


def _brightest_quadrant(frames: torch.Tensor) -> torch.Tensor:
    image = frames.sum((1, 2))  # (n, 8, 8)
    quadrants = torch.stack([image[:, :4, :4], image[:, :4, 4:], image[:, 4:, :4], image[:, 4:, 4:]], 1)
    return quadrants.sum((2, 3)).argmax(1)


def _loudest_band(mels: torch.Tensor) -> torch.Tensor:
    return mels.view(mels.shape[0], 4, 4, -1).sum((2, 3)).argmax(1)


def test_relation_labels_follow_the_media() -> None:
    """The place label is exactly whether the loudest band points to the brightest quadrant."""
    batch = make_batch("place", 256, torch.Generator().manual_seed(1))
    band = _loudest_band(batch["mels"])
    assert torch.equal(_brightest_quadrant(batch["frames"]), batch["video_part"])
    assert torch.equal(band, batch["audio_part"])
    assert torch.equal((band == batch["video_part"]).long(), batch["label"])


def test_perception_rows_are_unpaired_and_answered_by_their_own_medium() -> None:
    """In the recipe's perception rows one medium says nothing about the other (the audio comes from another
    such row), and each target is what that row's own video / audio shows."""
    g = torch.Generator().manual_seed(2)
    batch = make_batch("place", 2000, g)
    questions, target = training_questions("place", batch, 1.0, g)
    video, audio = questions == ASK_VIDEO, questions == ASK_AUDIO
    assert bool((video | audio).all()) and 0.4 < float(video.float().mean()) < 0.6
    assert torch.equal(target[video] - 2, _brightest_quadrant(batch["frames"][video]))
    assert torch.equal(target[audio] - 2, _loudest_band(batch["mels"][audio]))
    agree = (_brightest_quadrant(batch["frames"]) == _loudest_band(batch["mels"])).float().mean()
    assert abs(float(agree) - 0.25) < 0.05, "unpaired: the band points to the square by chance only"
    paired = make_batch("place", 2000, torch.Generator().manual_seed(2))
    training_questions("place", paired, 1.0, torch.Generator().manual_seed(3), unpaired=False)
    assert float((_brightest_quadrant(paired["frames"]) == _loudest_band(paired["mels"])).float().mean()) > 0.45


@pytest.mark.parametrize("style", ["early", "xattn"])
def test_stepwise_prompt_asks_each_medium_then_the_relation(style: str) -> None:
    """The stepwise rows ask the video, the audio, then the relation question, with media as generated (paired)
    and a target at each; the answers at the perception questions do not depend on the question after them,
    and a lone question's answer is read where the stepwise one is."""
    g = torch.Generator().manual_seed(5)
    batch = make_batch("count", 6, g)
    mels = batch["mels"].clone()
    questions, target = training_questions("count", batch, 0.5, g, stepwise=True)
    assert torch.equal(batch["mels"], mels), "stepwise rows keep their own audio"
    assert torch.equal(questions, torch.tensor([[ASK_VIDEO, ASK_AUDIO, QUESTION["count"]]] * 6))
    assert torch.equal(target, torch.stack([2 + batch["video_part"], 2 + batch["audio_part"], batch["label"]], 1))
    model = build(style, Recipe(stepwise=True), seed=0).eval()
    with torch.no_grad():
        logits = answer_logits(model, style, questions, batch)
        other = questions.clone()
        other[:, 2] = QUESTION["place"]
        changed = answer_logits(model, style, other, batch)
        alone = answer_logits(model, style, questions[:, 0], batch)
    assert logits.shape == (6, 3, 6)
    torch.testing.assert_close(changed[:, :2], logits[:, :2])
    assert not torch.allclose(changed[:, 2], logits[:, 2])
    torch.testing.assert_close(alone, logits[:, 0])


def test_command_line_runs() -> None:
    """Every style x task the command line names, with the recipe it sets, plus the TMRoPE ablation's two runs."""
    args = argparse.Namespace(tasks=["place", "count"], styles=["early", "xattn"], steps=10, lr=1e-3, perception=0.5,
                              paired=False, stepwise=False, max_seconds=None, tmrope_ablation=True)
    todo = runs(args)
    assert [(name, style, task) for name, style, task, _, _ in todo] == [
        ("early", "early", "place"), ("xattn", "xattn", "place"), ("early", "early", "count"),
        ("xattn", "xattn", "count"), ("early TMRoPE", "early", "time"), ("early plain 1-D", "early", "time")]
    assert all(r.steps == 10 and not r.stepwise for _, _, _, r, _ in todo) and todo[-1][3].plain_positions


def test_learning_rate_warms_up_then_decays_to_zero_at_the_step_or_time_limit() -> None:
    recipe = Recipe(steps=100, warmup=10)
    assert lr_factor(recipe, 0, 0.0) == pytest.approx(0.1) and lr_factor(recipe, 9, 0.0) == 1.0
    assert lr_factor(recipe, 55, 0.0) == pytest.approx(0.5) and lr_factor(recipe, 100, 0.0) == 0.0
    capped = Recipe(steps=100, warmup=10, max_seconds=60.0)
    assert lr_factor(capped, 20, 30.0) == pytest.approx(0.5) and lr_factor(capped, 20, 61.0) == 0.0


def test_tmrope_ablation_models_differ_only_in_their_rotary_ids() -> None:
    """The ablation's two models: same weights, no time in the media values, and rotary ids that are TMRoPE's
    (video and audio on one time axis) or plain 1-D sequence indices."""
    batch = make_batch("time", 2, torch.Generator().manual_seed(4))
    ids = early_ids(torch.tensor([20, 20]))
    media = {"frames": batch["frames"], "audio_features": batch["mels"], "audio_lengths": torch.tensor([100, 100])}
    no_values = Recipe(model_kwargs={"media_positions": False})
    tmrope = build("early", no_values, seed=0)
    plain = build("early", Recipe(plain_positions=True, model_kwargs={"media_positions": False}), seed=0)
    assert not tmrope.video.position_embedding and not tmrope.audio.time_embedding
    torch.testing.assert_close(dict(tmrope.named_parameters()), dict(plain.named_parameters()))
    t_ids = tmrope.fuse(ids, **media).positions
    assert torch.equal(plain.fuse(ids, **media).positions, torch.arange(ids.shape[1]).expand(3, 2, -1))
    video_t, audio_t = t_ids[0, 0, :16].view(4, 4)[:, 0], t_ids[0, 0, 16:41]
    assert torch.equal(video_t - video_t[0], torch.tensor([0, 6, 12, 18])), "0.25 s per step at 25 ids/s"
    assert torch.equal(audio_t - audio_t[0], torch.arange(25)), "40 ms per audio token"
    assert int(audio_t[0]) == int(video_t[0]), "video and audio start on the same time axis"


#: (style, task, steps) of the short runs kept in the suite: only pairs that reach 1.000 with margin under every
#: seed and thread count tried (seeds 0 and 1, one and two threads: cross-attention on ``place`` ends at 1.000 in
#: all four). Early fusion at 250 steps did not: ``time`` ended at 0.824 here and 0.656 on a CI machine (seed 0,
#: one thread), ``count`` at 1.000 with one thread but 0.81 / 0.91 with two; the full-length runs of every
#: style x task are measured in docs/fusion.md (``benchmarks/relation_sweep.py``), and early fusion's learning is
#: tested by ``examples/train_tiny_omni.py``'s slow test.
SHORT_RUNS = [("xattn", "place", 250)]


@pytest.mark.slow
@pytest.mark.parametrize(("style", "task", "steps"), SHORT_RUNS)
def test_short_run_learns_the_relation(style: str, task: str, steps: int) -> None:
    """The registered tiny model with the documented recipe (stepwise questions, ``steps`` steps of batch 64, one
    thread) answers the relation on held-out clips well above chance, and falls to chance when the audio or the
    video is another clip's; it also answers where the square is / which band sounds (a square in another
    quadrant gives another answer). 30-90 s each on one idle core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(style, task, Recipe(steps=steps), seed=0, test_size=256, every=steps)
    finally:
        torch.set_num_threads(threads)
    assert result["accuracy"] >= 0.75, result
    assert abs(result["audio_swapped"] - 0.5) < 0.1 and abs(result["video_swapped"] - 0.5) < 0.1, result
    assert result["video_perception"] >= 0.9 and result["audio_perception"] >= 0.9, result
