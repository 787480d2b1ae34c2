"""Code2Wav streams: inside ``code2wav.streaming(B)`` successive ``decode`` calls (chunks of any size, a batch)
add up to ``decode`` of all frames, through the attention KV cache, the causal convolutions and the trimmed
transposed convolutions' state."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio.code2wav import TrimmedConvTranspose1d


@pytest.mark.parametrize(("kernel", "stride"), [(3, 3), (8, 4), (6, 4)])
def test_trimmed_transposed_conv_streams(kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    conv = TrimmedConvTranspose1d(3, 2, kernel, stride)
    x = torch.randn(2, 3, 11)
    with torch.no_grad():
        full = conv(x)
        with conv.streaming(2):
            pieces = [conv(x[..., a:b]) for a, b in ((0, 1), (1, 1), (1, 5), (5, 11))]
    torch.testing.assert_close(torch.cat(pieces, dim=-1), full, rtol=0, atol=1e-6)


def test_code2wav_stream_equals_offline_decode() -> None:
    code2wav = omnikit.create_model("code2wav_tiny").eval()
    codes = torch.randint(0, code2wav.codebook_size, (2, code2wav.num_codebooks, 21),
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = code2wav.decode(codes)
        with code2wav.streaming(2):
            pieces = [code2wav.decode(codes[..., a:b]) for a, b in ((0, 1), (1, 5), (5, 6), (6, 21))]
    assert torch.cat(pieces, dim=-1).shape == full.shape
    torch.testing.assert_close(torch.cat(pieces, dim=-1), full, rtol=0, atol=1e-5 * float(full.abs().max()))
    with pytest.raises(ValueError, match="kernel_size"):
        TrimmedConvTranspose1d(2, 2, 9, 4)
