"""Qwen3-Omni "AuT"-style audio encoder: 3x Conv2d(s2) stem, ~12.5 tokens/s, 8 s attention windows.

Per item, log-mel frames are cut into chunks of ``2 * n_window`` frames (100 = 1 s). Each chunk,
zero-padded to full size, is treated as a one-channel image ``(n_mels, frames)`` and goes through
three ``Conv2d(k3, s2, p1)`` + GELU, is flattened over (channels, mel bins) and linearly projected
(``conv_out``) to 13 tokens per full chunk, with sinusoidal positions restarting in each chunk.
Attention is confined to windows of ``attn_window_chunks`` consecutive chunks (8 = 8 s = 104
tokens); then LayerNorm, ``proj1`` -> GELU -> ``proj2``.

Lengths: 13 tokens per full chunk plus ``t(r)`` for a last partial chunk of ``r`` frames, where
``t`` applies ``(L - 1) // 2 + 1`` three times.

Every chunk is padded to its full size before the stem, so an item's output never depends on
its batch. (The reference pads partial chunks only to the longest chunk in the batch; both agree
whenever the batch holds at least one full chunk, i.e. any clip of 1 s or more.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio import blocks
from omnikit.audio.blocks import EncoderStack, check_features, feature_contract_inputs, sinusoids, zero_padding
from omnikit.audio.windows import Windows
from omnikit.layers import LayerNorm
from omnikit.layers.linear import Linear
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import check_positive
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field

__all__ = ["AuTEncoder", "AuTEncoderConfig"]


def _halve(lengths: torch.Tensor | int) -> torch.Tensor | int:
    """Output length of a k3 s2 p1 convolution (int or tensor)."""
    return (lengths - 1) // 2 + 1


@flat_keywords
@dataclass
class AuTEncoderConfig(NestedConfig):
    """Hyper-parameters of :class:`AuTEncoder` (defaults: Qwen3-Omni's audio tower as in transformers)."""

    n_mels: int = 128
    conv_channels: int = 480
    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=1280, depth=32, num_heads=20, mlp_hidden=5120, window=50, norm_eps=1e-5)
    output_dim: int = 3584
    attn_window_chunks: int = 8
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps", n_window="window")


class AuTEncoder(nn.Module):
    """Qwen3-Omni AuT encoder with the omnikit batch API.

    Weights: ``conv2d1..3``, ``conv_out``, ``encoder``, ``norm`` (ln_post), ``proj1``, ``proj2``.
    """

    #: The output MLP: the ``projector`` part for per-tower recipes and LoRA (omnikit.fusion.towers).
    projector_modules: tuple[str, ...] = ("proj1", "proj2")

    def __init__(self, config: AuTEncoderConfig) -> None:
        super().__init__()
        check_positive(config.n_window, "n_window")
        check_positive(config.attn_window_chunks, "attn_window_chunks")
        self.config = config
        c = config.conv_channels
        self.conv2d1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.conv2d2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.conv2d3 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        mel_bins = _halve(_halve(_halve(config.n_mels)))
        self.conv_out = Linear(c * mel_bins, config.dim, bias=False)
        self.register_buffer("positions", sinusoids(self.chunk_tokens, config.dim), persistent=False)
        self.encoder = EncoderStack(config.dim, config.depth, config.num_heads, config.mlp_hidden,
                                    norm_eps=config.norm_eps, backend=config.backend)
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)
        self.proj1 = Linear(config.dim, config.dim)
        self.proj2 = Linear(config.dim, config.output_dim)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def chunk_frames(self) -> int:
        """Mel frames per conv chunk (``2 * n_window``)."""
        return 2 * self.config.n_window

    @property
    def chunk_tokens(self) -> int:
        """Tokens from one full chunk (13 for 100 frames)."""
        return _halve(_halve(_halve(self.chunk_frames)))

    @property
    def independent_frames(self) -> int:
        """Cutting the input at multiples of this many frames (one attention window) changes nothing."""
        return self.chunk_frames * self.config.attn_window_chunks

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per item: ``chunk_tokens`` per full chunk plus the partial chunk's."""
        lengths = lengths if isinstance(lengths, (int, torch.SymInt)) else torch.as_tensor(lengths)
        rest = lengths % self.chunk_frames
        return (lengths // self.chunk_frames) * self.chunk_tokens + _halve(_halve(_halve(rest)))  # 0 when rest is 0

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """``features (B, n_mels, T)``, ``lengths (B,)`` valid frames -> ``(B, T', output_dim)``."""
        x, n = check_features(features, lengths, self.config.n_mels, like=self)
        chunks = Windows.plan(n, self.chunk_frames, x.shape[-1])
        h = chunks.split(zero_padding(x, n))[:, None]  # (N, 1, n_mels, chunk_frames)
        h = F.gelu(self.conv2d1(h))
        if not torch.compiler.is_compiling() and h.device.type == "cpu":  # oneDNN's 3x3 convs: 2x faster on NHWC
            h = h.contiguous(memory_format=torch.channels_last)
        for conv in (self.conv2d2, self.conv2d3):
            h = F.gelu(conv(h))
        rows, channels, bins, steps = h.shape
        h = self.conv_out(h.permute(0, 3, 1, 2).reshape(rows, steps, channels * bins))
        h = chunks.merge(h + self.positions.to(h.dtype))  # (B, chunks * chunk_tokens, dim)
        out_lengths = self.output_lengths(n)
        windows = Windows.plan(out_lengths, self.chunk_tokens * self.config.attn_window_chunks, h.shape[1])
        h = windows.merge(self.encoder.forward_ragged(windows.split(h, dim=1), windows.valid))
        if torch.compiler.is_compiling():  # the padded length's steps, gathered: no size read from values, and
            # no strided slice whose contiguity (window padding or not) would make a graph per case
            h = h.index_select(1, torch.arange(self.output_lengths(x.shape[-1]), device=h.device))
        else:  # cropped to the longest item
            h = h[:, : int(out_lengths.max())]
        h = blocks.on_valid_steps(lambda v: self.proj2(F.gelu(self.proj1(self.norm(v)))), h, out_lengths)
        return EncoderOutput(h, out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.n_mels, lengths, seed)
