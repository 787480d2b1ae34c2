"""Frame sampling strategies, scene detection, event sampling, token budgets and plots."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from omnikit.video import (
    TokenSpec,
    available_backends,
    density_indices,
    detect_scenes,
    event_weights,
    find_cuts,
    fps_indices,
    load_video,
    open_video,
    plan_budget,
    scene_weights,
    uniform_indices,
)
from omnikit.video.synthetic import random_cuts, write_synthetic_video

BACKENDS = available_backends()


# ------------------------------------------------------------------ index rules (no video)
def test_uniform_takes_segment_centres() -> None:
    assert uniform_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert uniform_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="`num_frames` expected at most the video's 5 frames but got 6"):
        uniform_indices(5, 6)


def test_fps_picks_nearest_frame_to_each_tick() -> None:
    timestamps = np.arange(90) / 30.0  # 3 s at 30 fps
    assert fps_indices(timestamps, 2).tolist() == [0, 15, 30, 45, 60, 75]
    uneven = np.array([0.0, 0.1, 0.45, 0.52, 0.98, 1.3])
    assert fps_indices(uneven, 2).tolist() == [0, 3, 4, 5]  # ticks 0, 0.5, 1.0, 1.5 (the video ends at 1.62)
    assert fps_indices(timestamps, 100).tolist() == list(range(90))  # never duplicates
    assert len(fps_indices(timestamps, 2, max_frames=4)) == 4
    with pytest.raises(ValueError, match="`fps`"):
        fps_indices(timestamps, 0)


def test_density_sampling_follows_weights_and_is_distinct() -> None:
    weights = np.ones(100)
    weights[40:50] = 20.0
    picked = density_indices(weights, 20)
    assert len(np.unique(picked)) == 20 and picked.min() >= 0 and picked.max() < 100
    inside = ((picked >= 40) & (picked < 50)).sum()
    assert inside >= 10  # 200 of 290 weight: most samples, capped by distinctness
    crowded = density_indices(np.r_[np.zeros(10), [1000.0], np.zeros(9)], 8)
    assert len(np.unique(crowded)) == 8
    with pytest.raises(ValueError, match="`weights`"):
        density_indices(np.array([1.0, -1.0]), 1)


def test_scene_weights_peak_at_cut_boundaries() -> None:
    w = scene_weights(60, [20, 45])
    assert w.argmax() in (19, 20, 44, 45)
    assert w[20] > w[30] and w[19] > w[10] and w[44] > w[32]


def test_event_weights_follow_visual_and_audio_spikes() -> None:
    change = np.full(50, 0.05)
    change[10] = 0.5
    audio = np.full(50, 0.01)
    audio[30] = 0.3
    w = event_weights(change, audio)
    assert w[10] > 2 * w[0] and w[30] > 2 * w[0]
    with pytest.raises(ValueError, match="`audio_energy`"):
        event_weights(change, audio[:10])


def test_find_cuts_ignores_steady_motion_and_keeps_min_length() -> None:
    scores = np.full(60, 0.8)  # fast motion everywhere: high, but steady
    scores[10] = 1.5  # above threshold, below 3x the local level
    scores[25] = 3.0
    scores[26] = 2.8  # a double cut inside min_scene_len
    assert find_cuts(scores) == [25]
    assert find_cuts(np.zeros(30)) == []
    quiet = np.zeros(30)
    quiet[12] = 0.9  # a clear jump that stays under the absolute threshold
    assert find_cuts(quiet) == [] and find_cuts(quiet, threshold=0.5) == [12]


# ------------------------------------------------------------------ on videos
@pytest.mark.parametrize("seed", [11, 23, 37, 58])
def test_detect_scenes_finds_random_cuts_exactly(tmp_path, seed) -> None:
    rng = np.random.default_rng(seed)
    frames = int(rng.integers(90, 150))
    cuts = random_cuts(frames, int(rng.integers(2, 6)), min_gap=6, seed=seed)
    codec = ["libx264", "mpeg4"][seed % 2]
    video = write_synthetic_video(tmp_path / "v.mp4", num_frames=frames, cuts=cuts, codec=codec, seed=seed,
                                  sample_rate=0, size=(48, 64))
    for backend in BACKENDS:
        assert detect_scenes(video.path, backend=backend) == cuts, backend


def test_no_cut_in_a_single_moving_shot(tmp_path) -> None:
    video = write_synthetic_video(tmp_path / "v.mp4", num_frames=80, sample_rate=0, seed=4)
    assert detect_scenes(video.path) == []


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampling") / "v.mp4"
    return write_synthetic_video(path, num_frames=144, fps=24, cuts=[50, 100], audio_bursts=[1.0, 4.5], seed=9)


def test_scene_strategy_is_denser_around_cuts(cut_video) -> None:
    uniform = load_video(cut_video.path, num_frames=16, size=32).indices.numpy()
    scene = load_video(cut_video.path, num_frames=16, strategy="scene", size=32).indices.numpy()
    assert len(np.unique(scene)) == 16

    def near(indices: np.ndarray) -> int:
        edges = np.array([49, 50, 99, 100])
        return int(sum(np.abs(edges - i).min() <= 3 for i in indices))

    assert near(scene) > near(uniform)
    assert {49, 50} & set(scene.tolist()) and {99, 100} & set(scene.tolist())


def test_event_strategy_is_denser_around_audio_bursts(cut_video) -> None:
    clip = load_video(cut_video.path, num_frames=16, strategy="event", size=32)
    times = clip.timestamps.numpy()
    around = [np.sum(np.abs(times - (b + 0.1)) < 0.3) for b in cut_video.audio_bursts]
    assert all(a >= 2 for a in around), (times, around)  # uniform would put ~1.3 frames in 0.6 s


def test_token_budget_plan_fits_and_load_respects_it(cut_video) -> None:
    with open_video(cut_video.path) as video:
        info = video.info
    spec = TokenSpec(patch_size=8, merge_size=2, temporal_patch=2)
    plan = plan_budget(info, 300, spec=spec, min_side=16)
    assert plan.tokens <= 300 and plan.num_frames % 2 == 0
    assert plan.height % 16 == 0 and plan.width % 16 == 0 and plan.height <= 64
    bigger = plan_budget(info, 3000, spec=spec, min_side=16)
    assert bigger.tokens <= 3000 and bigger.height * bigger.width >= plan.height * plan.width
    clip = load_video(cut_video.path, max_tokens=300, token_spec=spec, strategy="scene")
    assert len(clip) == plan.num_frames and tuple(clip.frames.shape[-2:]) == (plan.height, plan.width)
    assert spec.tokens(len(clip), *clip.frames.shape[-2:]) <= 300
    with pytest.raises(ValueError, match="`max_tokens`"):
        plan_budget(info, 5, spec=spec, min_side=64)
    with pytest.raises(ValueError, match="`max_tokens`"):
        load_video(cut_video.path, max_tokens=300, num_frames=4)


def test_plots_are_written(cut_video, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from omnikit.video import compute_frame_scores, plot_contact_sheet, plot_sampling

    with open_video(cut_video.path) as video:
        scores = compute_frame_scores(video)
    clip = load_video(cut_video.path, num_frames=6, strategy="scene", size=32)
    plot_sampling(scores.cut, clip.indices.tolist(), tmp_path / "scores.png", cuts=find_cuts(scores.cut), fps=24)
    plot_contact_sheet(clip, tmp_path / "sheet.png", columns=3)
    assert (tmp_path / "scores.png").stat().st_size > 5000 and (tmp_path / "sheet.png").stat().st_size > 5000
