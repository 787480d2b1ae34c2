"""Audio encoders and features under bad input: every error names its argument; NaN stays contained."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio.features import log_mel_spectrogram

ENCODERS = ("whisper_encoder_tiny", "qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny")


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize(
    "make, lengths, error, message",
    [
        (lambda m: torch.randn(0, m, 40), None, ValueError, r"`features` expected at least one item"),
        (lambda m: torch.full((1, m, 40), float("nan")), None, ValueError, r"`features` expected finite"),
        (lambda m: torch.randn(2, m, 40), [40, 0], ValueError, r"`lengths` expected values in \[1, 40\]"),
        (lambda m: torch.randn(2, m, 40), [40.0, 20.0], TypeError, r"`lengths` expected an integer"),
        (lambda m: torch.ones(1, m, 40, dtype=torch.long), None, TypeError, r"`features` expected a floating"),
    ],
)
def test_encoder_errors_name_the_argument(tiny_model, name, make, lengths, error, message) -> None:
    model = tiny_model(name)
    n_mels = model.config.n_mels
    with pytest.raises(error, match=message):
        model(make(n_mels), None if lengths is None else torch.tensor(lengths))


@pytest.mark.parametrize("name", (*ENCODERS, "wav2vec2_feature_encoder_tiny"))
@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_non_finite_padding_never_reaches_valid_outputs(tiny_model, name, fill) -> None:
    model = tiny_model(name)
    channels = model.config.in_channels if name.startswith("wav2vec") else model.config.n_mels
    length = 400 if name.startswith("wav2vec") else 40
    x = torch.randn(2, channels, length)
    valid = length * 3 // 4
    x[1, :, valid:] = fill
    with torch.no_grad():
        batch = model(x, torch.tensor([length, valid]))
        alone = model(x[1:, :, :valid])
    n = int(batch.lengths[1])
    assert n == alone.hidden_states.shape[1]
    assert torch.isfinite(batch.hidden_states).all(), "NaN/inf from the padding reached the outputs"
    torch.testing.assert_close(batch.hidden_states[1, :n], alone.hidden_states[0], atol=1e-5, rtol=1e-4)


def test_wav2vec_input_shorter_than_its_receptive_field_is_named(tiny_model) -> None:
    with pytest.raises(ValueError, match=r"`features` expected enough samples for one output frame"):
        tiny_model("wav2vec2_feature_encoder_tiny")(torch.randn(1, 1, 3))


def test_log_mel_refuses_nan_and_wrong_rate() -> None:
    with pytest.raises(ValueError, match="`wav`"):
        log_mel_spectrogram(torch.full((1, 1600), float("nan")), sample_rate=16000)
    with pytest.raises(ValueError, match="`sample_rate`"):
        log_mel_spectrogram(torch.randn(1, 1600), sample_rate=8000)


@pytest.mark.parametrize("frames", [1, 2])
def test_windowed_encoder_refuses_items_too_short_for_a_token(frames: int) -> None:
    """1 or 2 mel frames give no token after the stride-2 conv and the pair pooling: an error, not 0 tokens."""
    model = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    n_mels = model.config.n_mels
    with pytest.raises(ValueError, match=f"at least 3 valid frames per item .* item 0 has {frames}"):
        model(torch.randn(1, n_mels, frames))
    with pytest.raises(ValueError, match=f"`lengths` expected at least 3 valid frames .* item 1 has {frames}"):
        model(torch.randn(2, n_mels, 9), torch.tensor([9, frames]))
    assert model(torch.randn(1, n_mels, 3)).lengths.tolist() == [1]
