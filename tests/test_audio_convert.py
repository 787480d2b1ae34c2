"""Parity of the converted audio encoders with transformers (float32, random weights, random lengths)."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.convert import from_transformers

transformers = pytest.importorskip("transformers")

TOWER = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=32)


def random_lengths(seed: int, count: int, high: int, low: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (count,), generator=g).tolist()


def padded_batch(lengths: list[int], n_mels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (B, n_mels, max(lengths)) with large noise in the padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), n_mels, max(lengths), generator=g)
    n = torch.tensor(lengths)
    pad = torch.arange(x.shape[-1])[None, :] >= n[:, None]
    return x + 50 * pad[:, None, :], n


def packed(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """HF's packed layout: valid frames of every item concatenated, ``(n_mels, sum(n))``."""
    return torch.cat([x[b, :, : int(n[b])] for b in range(len(n))], dim=1)


def assert_items_match(ours: omnikit.outputs.EncoderOutput, theirs: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.equal(ours.lengths, expected)
    assert int(expected.sum()) == theirs.shape[0]
    torch.testing.assert_close(torch.cat(ours.unpad()), theirs, atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------- Whisper


def hf_whisper(max_positions: int = 150) -> torch.nn.Module:
    config = transformers.WhisperConfig(**TOWER, max_source_positions=max_positions)
    torch.manual_seed(0)
    return transformers.models.whisper.modeling_whisper.WhisperEncoder(config).eval()


def test_whisper_matches_transformers_on_full_windows() -> None:
    hf = hf_whisper()
    ours = from_transformers(hf).eval()
    x = torch.randn(3, 32, 300)
    with torch.no_grad():
        expected = hf(x).last_hidden_state
        out = ours(x)
    assert out.lengths.tolist() == [150] * 3
    torch.testing.assert_close(out.hidden_states, expected, atol=2e-5, rtol=1e-4)


def test_whisper_mixed_clip_lengths_padded_like_whisper() -> None:
    """Clips of very different lengths, log-mel'd and zero-padded to the window as Whisper does."""
    from omnikit.audio import log_mel_spectrogram

    hf = hf_whisper()
    ours = from_transformers(hf).eval()
    g = torch.Generator().manual_seed(3)
    samples = [int(s) for s in torch.randint(200, 300 * 160, (3,), generator=g)]
    wav = torch.zeros(3, 300 * 160)
    for b, s in enumerate(samples):
        wav[b, :s] = torch.randn(s, generator=g) * 0.1
    mel, _ = log_mel_spectrogram(wav, sample_rate=16000, n_mels=32)
    with torch.no_grad():
        torch.testing.assert_close(ours(mel).hidden_states, hf(mel).last_hidden_state, atol=2e-5, rtol=1e-4)


def test_whisper_converted_model_saves_and_reloads(tmp_path) -> None:
    ours = from_transformers(hf_whisper()).eval()
    omnikit.save_pretrained(ours, tmp_path)
    again = omnikit.load_pretrained(tmp_path).eval()
    x = torch.randn(1, 32, 300)
    with torch.no_grad():
        assert torch.equal(ours(x).hidden_states, again(x).hidden_states)


def test_whisper_rejects_non_gelu() -> None:
    config = transformers.WhisperConfig(**TOWER, max_source_positions=8, activation_function="relu")
    with pytest.raises(ValueError, match="activation_function"):
        from_transformers(transformers.models.whisper.modeling_whisper.WhisperEncoder(config))


# --------------------------------------------------------------------------------------- Qwen2.5-Omni


def hf_qwen2_5(n_window: int) -> torch.nn.Module:
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    config = transformers.Qwen2_5OmniAudioEncoderConfig(**TOWER, output_dim=48, n_window=n_window)
    torch.manual_seed(0)
    return m.Qwen2_5OmniAudioEncoder(config).eval()


@pytest.mark.parametrize("n_window,seed", [(100, 0), (100, 1), (3, 2)])
def test_qwen2_5_omni_matches_transformers_on_random_mixed_lengths(n_window: int, seed: int) -> None:
    """Random lengths (several windows, partial windows, tiny clips; odd n_window pools across windows). The
    tiniest clip has 3 frames, one token: transformers returns no token for 1 or 2 frames, which omnikit refuses
    (tests/test_bad_input_audio.py)."""
    hf = hf_qwen2_5(n_window)
    ours = from_transformers(hf).eval()
    lengths = [*random_lengths(seed, 5, 9 * n_window, low=3), 3, 2 * n_window]
    x, n = padded_batch(lengths, 32, seed)
    with torch.no_grad():
        expected = hf(packed(x, n), feature_lens=n).last_hidden_state
        out = ours(x, n)
    assert_items_match(out, expected, hf._get_feat_extract_output_lengths(n)[1])


def test_qwen2_5_omni_tokens_per_second() -> None:
    ours = omnikit.create_model("qwen2_5_omni_audio_tiny", n_window=100)
    assert ours.output_lengths(torch.tensor([100 * 60])).item() == 25 * 60


# ---------------------------------------------------------------------------------- Qwen3-Omni (AuT)


def test_qwen3_omni_aut_matches_transformers_on_random_mixed_lengths() -> None:
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

    config = transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe.Qwen3OmniMoeAudioEncoderConfig(
        **TOWER, output_dim=48, n_window=50, n_window_infer=300, downsample_hidden_size=8,
    )
    torch.manual_seed(0)
    hf = m.Qwen3OmniMoeAudioEncoder(config).eval()
    ours = from_transformers(hf).eval()
    lengths = [*random_lengths(4, 4, 1000), 100, 37]  # the reference needs one full chunk in the batch
    x, n = padded_batch(lengths, 32, 4)
    with torch.no_grad():
        expected = hf(packed(x, n), feature_lens=n).last_hidden_state
        out = ours(x, n)
    assert_items_match(out, expected, m._get_feat_extract_output_lengths(n, 50))
