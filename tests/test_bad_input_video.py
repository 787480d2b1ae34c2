"""Video loading under bad input: bounded memory, one-frame videos, NaN thresholds, truncated files."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from omnikit.video import detect_scenes, load_video
from omnikit.video.backends import open_video
from omnikit.video.sampling import fps_indices
from omnikit.video.scenes import find_cuts
from omnikit.video.synthetic import write_synthetic_video


@pytest.fixture(scope="module")
def clip40(tmp_path_factory) -> str:
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "a.mp4", num_frames=40, fps=25, size=(32, 48)).path


@pytest.fixture(scope="module")
def clip1(tmp_path_factory) -> str:
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "one.mp4", num_frames=1, fps=25, size=(32, 48)).path


def test_huge_fps_is_bounded_by_the_frames(clip40) -> None:
    """fps=5e6 used to build one tick per 200 ns (1.45 GB for a 40-frame clip); now every frame, no ticks."""
    tracemalloc.start()
    indices = fps_indices(np.arange(40) / 25.0, 5e6)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert indices.tolist() == list(range(40)) and peak < 1_000_000
    assert load_video(clip40, fps=5e6, strategy="fps").frames.shape[0] == 40
    assert load_video(clip40, fps=5e6, strategy="fps", num_frames=4).frames.shape[0] == 4


@pytest.mark.parametrize("fps", [float("nan"), float("inf"), 0.0, -1.0, "2"])
def test_bad_fps_is_named(clip40, fps) -> None:
    with pytest.raises((ValueError, TypeError), match="`fps`"):
        load_video(clip40, fps=fps, strategy="fps")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_frames": 1}, {"fps": 2.0, "strategy": "fps"}, {"num_frames": 1, "strategy": "scene"},
     {"strategy": "keyframe"}],
)
def test_one_frame_video_works(clip1, kwargs) -> None:
    clip = load_video(clip1, **kwargs)
    assert clip.frames.shape[0] == 1 and clip.indices.tolist() == [0]


def test_one_frame_video_has_no_scenes(clip1) -> None:
    assert detect_scenes(clip1) == []


@pytest.mark.parametrize("name, value", [("threshold", float("nan")), ("ratio", float("nan")), ("ratio", -1.0)])
def test_nan_thresholds_are_refused_before_decoding(name, value) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        find_cuts(np.ones(10), **{name: value})
    with pytest.raises(ValueError, match=f"`{name}`"):
        detect_scenes("/nonexistent.mp4", **{name: value})  # refused before the file is even opened


def test_truncated_file_warns_with_both_counts(clip40, tmp_path) -> None:
    av = pytest.importorskip("av")
    faststart = tmp_path / "fs.mp4"  # header (moov) first, so a cut file still opens
    with av.open(clip40) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        video = open_video(cut, backend="pyav")
    with video:
        read = video.info.num_frames
        assert 0 < read < 40
        assert video.read([0, 1, 2]).shape[0] == 3, "the frames that are there still decode"
    messages = [str(w.message) for w in caught]
    assert any("40 frames" in m and f"only {read}" in m for m in messages), messages


@pytest.mark.parametrize("strategy", ["scene", "uniform", "keyframe", "event"])
@pytest.mark.parametrize("fps", [-1, 0, float("nan")])
def test_bad_fps_is_refused_by_every_strategy(clip40, strategy, fps) -> None:
    """Before, strategy='scene' with fps=-1 returned one frame where strategy='fps' refused it."""
    with pytest.raises(ValueError, match="`fps` expected a finite number > 0"):
        load_video(clip40, fps=fps, strategy=strategy)


@pytest.mark.parametrize("num_frames", [0, -3])
def test_bad_num_frames_is_refused(clip40, num_frames) -> None:
    with pytest.raises(ValueError, match="`num_frames` expected an int > 0"):
        load_video(clip40, num_frames=num_frames, strategy="scene")


@pytest.mark.parametrize("size", [(100000, 100000), 20000, (32, 0)])
def test_absurd_sizes_are_refused_before_decoding(clip40, size) -> None:
    with pytest.raises(ValueError, match=r"`size` expected .* in \[1, 16384\]"):
        load_video(clip40, num_frames=2, size=size)
