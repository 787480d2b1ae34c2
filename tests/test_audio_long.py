"""Long audio: chunked encoding equals the full forward, with a progress bar."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio import encode_long, iter_encode


@pytest.mark.parametrize("name", ["qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny"])
def test_encode_long_equals_one_forward_on_mixed_lengths(name: str) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model(name).eval()
    unit = model.independent_frames
    lengths = torch.tensor([7 * unit + 3, unit - 1, 3 * unit])
    x = torch.randn(3, 16, int(lengths.max()))
    with torch.no_grad():
        full = model(x, lengths)
    chunked = encode_long(model, x, lengths, chunk_frames=2 * unit, progress=False)
    assert torch.equal(chunked.lengths, full.lengths)
    torch.testing.assert_close(chunked.hidden_states, full.hidden_states, atol=1e-5, rtol=1e-4)


def test_iter_encode_shows_progress_and_bounds_each_piece(capsys) -> None:
    model = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    x = torch.randn(1, 16, 8 * 25)
    with torch.no_grad():
        pieces = list(iter_encode(model, x, chunk_frames=16, progress=True))
    assert len(pieces) == 13 and all(p.hidden_states.shape[1] <= 4 for p in pieces)
    assert "encoding audio" in capsys.readouterr().err


def test_whisper_is_encoded_in_independent_30s_windows() -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("whisper_encoder_tiny", max_positions=8).eval()
    x = torch.randn(1, 16, 40)
    out = encode_long(model, x, progress=False)
    with torch.no_grad():
        expected = torch.cat([model(x[..., s : s + 16]).hidden_states for s in (0, 16, 32)], dim=1)
    torch.testing.assert_close(out.hidden_states, expected, atol=1e-5, rtol=1e-4)


def test_chunk_must_respect_the_windows() -> None:
    model = omnikit.create_model("qwen2_5_omni_audio_tiny")
    with pytest.raises(ValueError, match="multiple of 8"):
        encode_long(model, torch.randn(1, 16, 30), chunk_frames=12, progress=False)
    with pytest.raises(TypeError, match="independent_frames"):
        encode_long(omnikit.create_model("wav2vec2_feature_encoder_tiny"), torch.randn(1, 1, 30), progress=False)
