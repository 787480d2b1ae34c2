"""Frame encoders under bad input: checked before timm, errors name `frames`."""

from __future__ import annotations

import pytest
import torch

import omnikit


@pytest.fixture()
def encoder(tiny_model) -> torch.nn.Module:
    return tiny_model("frame_encoder_tiny")


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda f: f[:, :, :1], ValueError, r"`frames` expected 3 channels"),
        (lambda f: torch.nn.functional.pad(f, (0, 1)), ValueError, r"`frames` expected \(\d+, \d+\) pixels"),
        (lambda f: f.double(), TypeError, r"`frames` expected dtype torch.float32"),
        (lambda f: f[:, :0], ValueError, r"`frames` expected at least one frame"),
        (lambda f: f.fill_(float("nan")), ValueError, r"`frames` expected finite values"),
        (lambda f: f[0], ValueError, r"`frames` expected shape \(B, T, C, H, W\)"),
    ],
)
def test_frame_encoder_checks_before_the_backbone(encoder, change, error, message) -> None:
    frames = torch.randn(1, 2, 3, *encoder.input_size)
    with pytest.raises(error, match=message):
        encoder(change(frames))


def test_empty_batch_gives_empty_output(encoder) -> None:
    out = encoder(torch.randn(0, 2, 3, *encoder.input_size))
    assert out.hidden_states.shape[0] == 0 and out.lengths.shape == (0,)


def test_nan_in_padded_frames_is_never_encoded(encoder) -> None:
    frames = torch.randn(2, 3, 3, *encoder.input_size)
    frames[1, 2:] = float("nan")
    with torch.no_grad():
        out = encoder(frames, torch.tensor([3, 2]))
        alone = encoder(frames[1:, :2])
    assert torch.isfinite(out.hidden_states).all()
    n = int(out.lengths[1])
    torch.testing.assert_close(out.hidden_states[1, :n], alone.hidden_states[0])


def test_video_vit_empty_batch_is_named(tiny_model) -> None:
    vit = tiny_model("video_vit_tiny")
    frames = vit.contract_inputs([2]).kwargs["frames"][:0]
    with pytest.raises(ValueError, match=r"`frames` expected at least one clip"):
        vit(frames)


def test_unnormalised_pixel_frames_are_refused(encoder) -> None:
    """Float frames holding raw 0-255 values are refused in eager mode (normalised pixels lie within ~2.7)."""
    model = encoder.eval()
    frames = model.contract_inputs([2]).kwargs["frames"]
    raw = (frames.clamp(-1, 1) + 1) * 127.5
    with pytest.raises(ValueError, match=r"`frames` expected values normalised for the backbone .* raw 0-255 pixels"):
        model(raw)
    assert model(frames).hidden_states.isfinite().all()


@pytest.mark.parametrize("name", ["video_vit_tiny", "qwen2_5_omni_vision_tiny", "qwen3_vit_tiny", "frame_encoder_tiny"])
def test_zero_frame_video_blames_frames(name: str) -> None:
    """Before, video towers blamed `lengths` (which the caller had not passed) for a clip of no frames."""
    model = omnikit.create_model(name).eval()
    frames = model.contract_inputs([2]).kwargs["frames"]
    with pytest.raises(ValueError, match="`frames` expected at least one"):
        model(frames[:, :0])
