"""The token budget equals what the encoders and the processor-style prompt produce, for every omni Thinker."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.budget import TokenCounter
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts

OMNI_THINKERS = ["qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"]


@pytest.fixture(scope="module", params=OMNI_THINKERS)
def model(request):
    torch.manual_seed(0)
    return omnikit.create_model(request.param).eval()


def test_counts_equal_the_encoders_outputs(model) -> None:
    counter = TokenCounter(model)
    for seconds in (0.5, 1.0, 2.37, 9.0):
        frames = int(seconds * 100)
        mel = torch.randn(1, model.audio_encoder.config.n_mels, frames)
        with torch.no_grad():
            produced = int(model.audio_encoder(mel, torch.tensor([frames])).lengths[0])
        assert counter.audio(seconds) - 2 == produced, seconds
    g = torch.Generator().manual_seed(0)
    for frames, height, width in ((1, 32, 32), (3, 32, 64), (4, 64, 32)):
        prompt = OmniPrompt(model, generator=g).video(frames, height, width)
        with torch.no_grad():
            out = model.vision_encoder.forward_patches(prompt.pixels["video"][0], prompt.grids["video"][0])
        rows = getattr(out, "hidden_states", out).shape[0]  # Qwen3's packed output or a tensor
        assert counter.video(frames, 1.0, height, width) - 2 == rows


@pytest.mark.parametrize("with_audio", [False, True])
def test_budget_equals_the_processor_prompt(model, with_audio: bool) -> None:
    """A mixed prompt: the budget's total is the row the processor writes, and the model runs it."""
    counter = TokenCounter(model)
    g = torch.Generator().manual_seed(1)
    prompt = (OmniPrompt(model, generator=g).text(3).image(32, 32).audio(250)
              .video(4, 32, 32, seconds_per_step=1.0, audio_frames=200 if with_audio else 0).text(2))
    budget = counter.budget(
        len(prompt.ids) + 5, text=5, audio_seconds=[2.5], images=[(32, 32)], videos=[(2.0, 2.0, 32, 32)],
        videos_with_audio=with_audio,
    )
    assert budget.used == len(prompt.ids) and budget.left == 5 and budget.fits
    with torch.no_grad():
        logits = model(**collate_prompts([prompt]))
    assert logits.shape[1] == budget.used


def test_long_media_are_extrapolated_analytically(model) -> None:
    counter = TokenCounter(model)
    hour = counter.audio(3600.0) - 2
    assert counter.audio(36000.0) - 2 == 10 * hour  # whole windows scale linearly
    assert counter.video(400.0, 1.0, 64, 64) == 200 * (counter.video(2.0, 1.0, 64, 64) - 2) + 2
    budget = counter.budget(262144, audio_seconds=[36000.0], videos=[(400.0, 1.0, 64, 64)])
    assert "left" in budget.table() and budget.used == counter.audio(36000.0) + counter.video(400.0, 1.0, 64, 64)


def test_refuse_or_downsample_policy(model) -> None:
    counter = TokenCounter(model)
    videos = [(20.0, 2.0, 64, 64)]
    full = counter.video(*videos[0])
    assert counter.budget(full, videos=videos).fits
    with pytest.raises(ValueError, match=f"needs {full + 10} tokens but the context holds {full}"):
        counter.budget(full, text=10, videos=videos).check()
    fitted = counter.fit_video_fps(full, videos, text=10)
    assert 1.0 < fitted[0][1] < 2.0 and counter.budget(full, text=10, videos=fitted).fits
    assert not counter.budget(full, text=10, videos=[(20.0, fitted[0][1] + 0.1, 64, 64)]).fits  # the highest
    assert counter.fit_video_fps(full, videos) == videos
    with pytest.raises(ValueError, match=r"min_fps=1\.0"):
        counter.fit_video_fps(full // 2, videos, text=10, min_fps=1.0)


def test_bad_input_names_the_argument(model) -> None:
    counter = TokenCounter(model)
    with pytest.raises(ValueError, match="`image` height expected a positive multiple of"):
        counter.image(30, 32)
    with pytest.raises(ValueError, match="audio_seconds"):
        counter.audio(0.0)
    with pytest.raises(ValueError, match="context"):
        counter.budget(0)
    with pytest.raises(TypeError, match="OmniThinker"):
        TokenCounter(omnikit.create_model("decoder_tiny"))


def test_early_fusion_budget_equals_the_placeholders_the_model_reads() -> None:
    """omni_early_tiny: no markers; video tokens from its adapter's grid, audio from its encoder."""
    torch.manual_seed(0)
    model = omnikit.create_model("omni_early_tiny").eval()
    counter = TokenCounter(model)
    video, audio = counter.video(2.0, 2.0, 16, 16), counter.audio(1.5)
    tokens = model.thinker.media_tokens
    ids = torch.tensor([[tokens.video] * video + [tokens.audio] * audio + [20] * 5])
    frames = torch.randn(1, 4, model.video.encoder.in_channels, 16, 16)
    mel = torch.randn(1, model.audio.encoder.config.n_mels, 150)
    with torch.no_grad():
        logits = model(ids, frames=frames, audio_features=mel, audio_lengths=torch.tensor([150]))
    assert logits.shape[1] == counter.budget(64, text=5, audio_seconds=[1.5], videos=[(2.0, 2.0, 16, 16)]).used
    with pytest.raises(ValueError, match="takes no images"):
        counter.image(16, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        counter.video(2.0, 2.0, 18, 16)


def test_the_data_path_counts_the_same() -> None:
    """OmniProcessor (whose ``max_media_tokens`` refuses or drops frames, then cuts audio) counts media
    tokens the way the budget does."""
    from omnikit.data import OmniProcessor

    model = omnikit.create_model("omni_early_tiny")
    counter = TokenCounter(model)
    processor = OmniProcessor(model, num_frames=8, size=(16, 32))
    for seconds in (0.5, 3.21, 60.0):
        assert processor.audio_tokens(int(seconds * 16000)) == counter.audio(seconds)
    t, h, w = processor.grid(8)
    assert t * h * w == counter.video(4.0, 2.0, 16, 32)
