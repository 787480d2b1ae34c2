"""The causal SEANet codec: streaming == offline, causality, length bookkeeping, quantizer variants."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio import CausalConvTranspose1d


def random_sizes(total: int, seed: int) -> list[int]:
    """Random chunk sizes (some empty, some tiny) summing to ``total``."""
    g = torch.Generator().manual_seed(seed)
    sizes, left = [], total
    while left > 0:
        size = min(left, int(torch.randint(0, 3 * total // 7 + 2, (1,), generator=g)))
        sizes.append(size)
        left -= size
    return sizes


def codec(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model("seanet_codec_tiny", ratios=(3, 2), n_residual=2, **overrides).eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_encode_and_decode_equal_offline(seed: int) -> None:
    model = codec()
    wav = torch.randn(2, 1, 6 * 23 + 5, generator=torch.Generator().manual_seed(seed)) * 0.3
    with torch.no_grad():
        codes = model.encode(wav)
        audio = model.decode(codes)
        assert codes.shape == (2, 2, 23) and audio.shape == (2, 1, 23 * 6)
        with model.streaming(2):
            pieces, start = [], 0
            for size in random_sizes(wav.shape[-1], seed):
                pieces.append(model.encode(wav[..., start : start + size]))
                start += size
            streamed = torch.cat(pieces, dim=-1)
            out, start = [], 0
            for size in random_sizes(codes.shape[-1], seed + 10):
                out.append(model.decode(codes[..., start : start + size]))
                start += size
    assert torch.equal(streamed, codes)
    torch.testing.assert_close(torch.cat(out, dim=-1), audio, atol=1e-6, rtol=1e-5)


def test_future_samples_never_change_past_codes_or_audio() -> None:
    model = codec()
    wav = torch.randn(1, 1, 120) * 0.3
    changed = wav.clone()
    changed[..., 60:] = torch.randn(1, 1, 60)
    with torch.no_grad():
        a, b = model(wav), model(changed)
    assert torch.equal(a.codes[..., :10], b.codes[..., :10])
    torch.testing.assert_close(a.audio[..., :60], b.audio[..., :60])


def test_causal_conv_transpose_streams_and_trims() -> None:
    layer = CausalConvTranspose1d(3, 2, 5, stride=2).eval()
    x = torch.randn(2, 3, 17)
    with torch.no_grad():
        full = layer(x)
        assert full.shape == (2, 2, 34)
        with layer.streaming(2):
            sizes = random_sizes(17, 3)
            starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
            streamed = torch.cat([layer(x[..., s : s + n]) for s, n in zip(starts, sizes)], dim=-1)
    torch.testing.assert_close(streamed, full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConvTranspose1d(1, 1, 2, stride=3)


def test_metadata_lengths_and_errors() -> None:
    model = omnikit.create_model("seanet_codec_24khz", device="meta")
    assert (model.sample_rate, model.frame_rate, model.num_codebooks, model.codebook_size) == (24000, 75.0, 8, 1024)
    tiny = codec()
    out = tiny(torch.randn(2, 1, 40) * 0.1, torch.tensor([40, 17]))
    assert out.lengths.tolist() == [6, 2] and out.hidden_states.shape == (2, 6, 6)
    assert torch.equal(out.hidden_states[1, 0], out.audio[1, 0, :6])
    with pytest.raises(ValueError, match="1 channel"):
        tiny.encode(torch.randn(1, 2, 12))
    with pytest.raises(ValueError, match="codes"):
        tiny.decode(torch.zeros(1, 3, 4, dtype=torch.long))
    with tiny.streaming(1), pytest.raises(ValueError, match="lengths"):
        tiny(torch.randn(1, 1, 12), torch.tensor([12]))


@pytest.mark.parametrize("quantizer,codebooks", [("split", 3), ("fsq", 1)])
def test_quantizer_variants(quantizer: str, codebooks: int) -> None:
    model = codec(quantizer=quantizer, num_quantizers=3, fsq_levels=(5, 3))
    wav = torch.randn(1, 1, 60) * 0.2
    codes = model.encode(wav)
    assert codes.shape == (1, codebooks, 10) and model.num_codebooks == codebooks
    assert model.decode(codes).shape == (1, 1, 60)
    torch.testing.assert_close(model.decode(codes), model(wav).audio, atol=1e-5, rtol=1e-4)


def test_a_few_training_steps_reduce_the_reconstruction_error() -> None:
    model = codec(num_quantizers=4).train()
    t = torch.arange(600) / 8000
    wav = (0.5 * torch.sin(2 * torch.pi * 440 * t))[None, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(wav)
        loss = (out.audio - wav[..., : out.audio.shape[-1]]).square().mean() + out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
