"""Whisper-style audio encoder: conv stem (k3 s1, k3 s2, GELU) + sinusoidal positions + pre-LN transformer.

``forward(features (B, n_mels, T), lengths=None) -> EncoderOutput((B, T', dim), lengths')`` with
``T' = (T - 1) // 2 + 1`` (50 tokens/s at Whisper's 100 frames/s).

Padding: with ``lengths`` given, padded frames are zeroed before the stem and padded tokens are
masked out of attention, so an item's output does not depend on its batch. Without ``lengths``
every frame is attended, which is what OpenAI/Hugging Face Whisper do on their 30 s (3000 frame)
windows; feed 3000 frames and no ``lengths`` to reproduce them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import EncoderStack, check_features, feature_contract_inputs, sinusoids, zero_padding
from omnikit.layers import LayerNorm, lengths_to_mask
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field

__all__ = ["WhisperEncoder", "WhisperEncoderConfig"]


@flat_keywords
@dataclass
class WhisperEncoderConfig(NestedConfig):
    """Hyper-parameters of :class:`WhisperEncoder` (defaults: Whisper large-v3); the flat keywords
    ``dim``, ``depth``, ``num_heads``, ``mlp_hidden``, ``norm_eps`` set (and read) ``transformer``'s."""

    n_mels: int = 128
    transformer: TransformerConfig = nested_field(TransformerConfig, dim=1280, depth=32, num_heads=20,
                                                  mlp_hidden=5120, norm_eps=1e-5)
    max_positions: int = 1500
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps")


class WhisperEncoder(nn.Module):
    """Whisper audio encoder. Weights: ``conv1``, ``conv2``, ``positions`` (buffer), ``encoder``, ``norm``."""

    def __init__(self, config: WhisperEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.dim, config.dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(config.max_positions, config.dim))
        self.encoder = EncoderStack(config.dim, config.depth, config.num_heads, config.mlp_hidden,
                                    norm_eps=config.norm_eps, backend=config.backend)
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)

    @property
    def output_dim(self) -> int:
        return self.config.dim

    @property
    def max_frames(self) -> int:
        """The most frames one call takes (3000 = 30 s for Whisper)."""
        return 2 * self.config.max_positions

    @property
    def independent_frames(self) -> int:
        """:func:`omnikit.audio.encode_long` encodes long audio in windows of this many frames (30 s)."""
        return self.max_frames

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per item: ``(lengths - 1) // 2 + 1`` (the stride-2 conv with padding 1)."""
        return (torch.as_tensor(lengths) - 1) // 2 + 1

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """``features (B, n_mels, T)`` log-mel frames, ``lengths (B,)`` valid frames -> ``(B, T', dim)``."""
        x, n = check_features(features, lengths, self.config.n_mels, like=self)
        tokens = (x.shape[-1] - 1) // 2 + 1
        if tokens > self.config.max_positions:
            raise OmnikitValueError(
                f"`features` expected at most {self.max_frames} frames "
                f"({self.config.max_positions} positions) but got {x.shape[-1]}; encode long audio in windows "
                "with omnikit.audio.encode_long"
            )
        padded = lengths is not None and (torch.compiler.is_compiling() or bool((n < x.shape[-1]).any()))
        h = F.gelu(self.conv1(zero_padding(x, n) if padded else x))
        h = F.gelu(self.conv2(zero_padding(h, n) if padded else h)).transpose(1, 2)
        h = h + self.positions[:tokens].to(h.dtype)
        out_lengths = self.output_lengths(n)
        mask = lengths_to_mask(out_lengths, tokens) if padded else None
        h = self.norm(self.encoder(h, mask))
        if mask is not None:
            h = h.masked_fill(~mask[..., None], 0)
        return EncoderOutput(h, out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.n_mels, lengths, seed)
