"""A small causal code-to-waveform decoder that streams: chunked decoding equals offline decoding.

``codes (B, K, F)`` -> summed codebook embeddings -> causal convolutions -> a per-frame linear
map to ``hop`` samples (no transposed convolution, so each frame's samples depend only on
current and past frames). Inside ``with decoder.streaming(B):`` feed any number of frames at a
time; the concatenated outputs equal ``decode(all codes)``.

It is the stand-in vocoder of the tiny Thinker-Talker (any codec with ``decode`` and
streaming works in its place).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.conv import CausalConv1d
from omnikit.streaming import StreamingContainer
from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["CausalCodeDecoder"]


class CausalCodeDecoder(StreamingContainer, nn.Module):
    """``decode(codes (B, K, F)) -> wav (B, 1, F * hop)``.

    Args:
        num_codebooks, codebook_size: the code layout it reads.
        sample_rate: output sample rate; ``frame_rate = sample_rate / hop``.
        hop: samples per code frame.
        channels, depth, kernel_size: width and number of causal conv layers.
    """

    def __init__(
        self, num_codebooks: int, codebook_size: int, *, sample_rate: int = 16000, hop: int = 320,
        channels: int = 64, depth: int = 2, kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if sample_rate % hop:
            raise OmnikitValueError(f"`hop` ({hop}) must divide `sample_rate` ({sample_rate})")
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.sample_rate, self.hop = sample_rate, hop
        self.embed = nn.ModuleList(nn.Embedding(codebook_size, channels) for _ in range(num_codebooks))
        self.convs = nn.ModuleList(CausalConv1d(channels, channels, kernel_size) for _ in range(depth))
        self.to_samples = nn.Linear(channels, hop)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F)`` int in ``[0, codebook_size)`` -> ``wav (B, 1, F * hop)`` in ``(-1, 1)``."""
        check_tensor(codes, "codes", shape=("B", self.num_codebooks, "F"), floating=False)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise OmnikitValueError(
                f"`codes` expected values in [0, {self.codebook_size}) but got [{int(codes.min())}, {int(codes.max())}]"
            )
        x = sum(emb(codes[:, k]) for k, emb in enumerate(self.embed)).transpose(1, 2)  # (B, C, F)
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        return torch.tanh(self.to_samples(x.transpose(1, 2))).flatten(1)[:, None]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode(codes)
