"""The context bound in the data path: ``max_length`` refuses a sample that does not fit, naming it and
its counts, or lowers the batch's video frames (``overflow="fewer_frames"``); text and audio are never cut."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.data import MediaDataset, OmniProcessor, SampleTooLongError
from omnikit.fusion.models import TINY_MARKERS

EARLY = omnikit.create_model("omni_early_tiny").eval()
THINKER = omnikit.create_model("qwen2_5_omni_thinker_tiny").eval()


def _video_sample(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"text": "<video> what moves?", "videos": [torch.rand(16, 3, 16, 16, generator=g)]}


def _lengths(processor: OmniProcessor, samples: list[dict]) -> list[int]:
    return processor(samples).lengths.tolist()


def test_fitting_samples_are_unchanged() -> None:
    samples = [_video_sample(), {"text": "short"}]
    free = OmniProcessor(EARLY, num_frames=8, markers=TINY_MARKERS)(samples)
    bound = OmniProcessor(EARLY, num_frames=8, markers=TINY_MARKERS, max_length=int(free.lengths.max()))(samples)
    assert torch.equal(free.input_ids, bound.input_ids) and torch.equal(free.frames, bound.frames)


def test_too_long_sample_is_refused_with_its_counts() -> None:
    need = _lengths(OmniProcessor(EARLY, num_frames=8, markers=TINY_MARKERS), [_video_sample()])[0]
    processor = OmniProcessor(EARLY, num_frames=8, markers=TINY_MARKERS, max_length=need - 1)
    with pytest.raises(SampleTooLongError, match=rf"sample #1 needs {need} positions but `max_length` is {need - 1}"
                       r".*visual \d+ \(1 video\(s\) at 8 frames") as err:
        processor([{"text": "fits"}, _video_sample()])
    assert isinstance(err.value, ValueError) and err.value.source == "#1"


@pytest.mark.parametrize("processor_of", [
    lambda **kw: OmniProcessor(EARLY, markers=TINY_MARKERS, **kw),
    lambda **kw: OmniProcessor(THINKER, lambda text: [ord(c) % 100 for c in text], size=(16, 16), **kw),
], ids=["early", "thinker"])
def test_fewer_frames_gives_the_largest_frame_count_that_fits(processor_of) -> None:
    samples = [_video_sample(0), {"text": "text only"}]
    step = processor_of(num_frames=8).step_frames
    at = {f: _lengths(processor_of(num_frames=f), samples)[0] for f in range(step, 9, step)}
    assert len(set(at.values())) == len(at)  # frames cost positions
    limit = at[8 - 2 * step]  # fits exactly two steps below
    batch = processor_of(num_frames=8, max_length=limit, overflow="fewer_frames")(samples)
    reference = processor_of(num_frames=8 - 2 * step)(samples)
    assert int(batch.lengths.max()) == limit
    assert torch.equal(batch.input_ids, reference.input_ids)  # frames: picked from the 8 decoded ones
    video = "frames" if "frames" in reference.model_inputs() else "pixel_values_videos"
    assert batch.model_inputs()[video].shape == reference.model_inputs()[video].shape


def test_fewer_frames_refuses_what_cannot_fit() -> None:
    one_step = OmniProcessor(EARLY, num_frames=EARLY.video.frames_per_step, markers=TINY_MARKERS)
    floor = _lengths(one_step, [_video_sample()])[0]
    processor = OmniProcessor(EARLY, num_frames=8, markers=TINY_MARKERS, max_length=floor - 1,
                              overflow="fewer_frames")
    with pytest.raises(SampleTooLongError, match="does not fit even at"):
        processor([_video_sample()])
    audio = {"text": "<audio> hi", "audios": [0.1 * torch.randn(16000)]}
    need = _lengths(one_step, [audio])[0]
    with pytest.raises(SampleTooLongError, match=r"audio .*never cut"):
        OmniProcessor(EARLY, markers=TINY_MARKERS, max_length=need - 1, overflow="fewer_frames")([audio])


def test_bad_policy_and_length() -> None:
    with pytest.raises(ValueError, match="overflow"):
        OmniProcessor(EARLY, max_length=10, overflow="truncate")
    with pytest.raises(ValueError, match="max_length"):
        OmniProcessor(THINKER, size=(16, 16), max_length=0)


def test_dataset_skips_a_sample_that_does_not_fit(tmp_path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a short one"}\n{"text": "' + "long " * 40 + '"}\n')
    processor = OmniProcessor(EARLY, markers=TINY_MARKERS, max_length=50)
    with pytest.raises(SampleTooLongError):
        MediaDataset(tmp_path / "train.jsonl", processor).collate([processor.load({"text": "x" * 60}, "a")])
    dataset = MediaDataset(tmp_path / "train.jsonl", processor, on_error="skip")
    with pytest.warns(UserWarning, match=r"train.jsonl:2 needs 200 positions"):
        batch = dataset.collate([dataset[0], dataset[1]])
    assert batch.lengths.tolist() == [len("a short one")]
