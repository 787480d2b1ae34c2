"""Qwen3-Omni Code2Wav: the waveform equals transformers' ``Qwen3OmniMoeCode2Wav`` for given codes."""

from __future__ import annotations

import pytest
import torch
from qwen3_omni_reference import assert_within_reference_rounding, randomise, tame_code2wav

import omnikit
from omnikit.convert import from_transformers
from omnikit.utils.checks import OmnikitValueError

pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeCode2WavConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

TINY = dict(codebook_size=16, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, sliding_window=5,
            intermediate_size=48, num_hidden_layers=2, num_quantizers=3, upsample_rates=[2, 3],
            upsampling_ratios=[2, 2], decoder_dim=16, rms_norm_eps=1e-5)


def hf_code2wav(**overrides) -> Qwen3OmniMoeCode2Wav:
    cfg = Qwen3OmniMoeCode2WavConfig(**{**TINY, **overrides})
    cfg._attn_implementation = "eager"
    model = Qwen3OmniMoeCode2Wav(cfg).eval()
    randomise(model, scale=0.3)
    tame_code2wav(model, cfg.codebook_size, cfg.num_quantizers)
    return model


def test_waveform_matches_transformers() -> None:
    hf = hf_code2wav()
    ours = from_transformers(hf).eval()
    codes = torch.randint(0, 16, (2, 3, 12), generator=torch.Generator().manual_seed(0))  # > sliding window
    with torch.no_grad():
        ref = hf(codes)
        wav = ours.decode(codes)
    assert wav.shape == ref.shape
    assert (ref.abs() < 1).float().mean() > 0.5, "reference saturated: the test would compare clamps"
    assert_within_reference_rounding(wav, hf, lambda m: m(codes))


def test_chunked_decode_matches_transformers() -> None:
    hf = hf_code2wav()
    ours = from_transformers(hf).eval()
    codes = torch.randint(0, 16, (1, 3, 23), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = hf.chunked_decode(codes, chunk_size=8, left_context_size=3)
        wav = ours.chunked_decode(codes, chunk_size=8, left_context=3)
    assert wav.shape == ref.shape
    assert_within_reference_rounding(wav, hf, lambda m: m.chunked_decode(codes, chunk_size=8, left_context_size=3))


def test_lengths_and_padding() -> None:
    ours = from_transformers(hf_code2wav()).eval()
    codes = torch.randint(0, 16, (2, 3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(codes, torch.tensor([9, 6]))
        alone = ours.decode(codes[1:, :, :6])
    assert out.lengths.tolist() == [out.audio.shape[-1], alone.shape[-1]]
    torch.testing.assert_close(out.audio[1, :, : alone.shape[-1]], alone[0], atol=1e-5, rtol=1e-4)
    assert not out.audio[1, :, alone.shape[-1]:].any()


def test_published_preset_rate_and_bad_codes() -> None:
    model = omnikit.create_model("code2wav_qwen3_omni", device="meta")
    assert model.hop == 1920 and model.frame_rate == 12.5 and model.sample_rate == 24000
    tiny = omnikit.create_model("code2wav_tiny")
    with pytest.raises(OmnikitValueError, match="codes"):
        tiny.decode(torch.full((1, 3, 4), 16))
