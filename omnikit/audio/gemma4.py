"""Gemma 4's audio tower: a conformer-style encoder over log-mel frames, 4x subsampled.

::

    features (B, n_mels, T) -> 2 x [Conv2d 3x3 stride 2 -> LayerNorm -> ReLU] -> Linear -> (B, T/4, dim)
      -> depth x conformer block -> Linear (out_dim) [-> RMSNorm (no weight) -> Linear (text width)]

A conformer block: half-step feed-forward, blocked local self-attention (relative positions,
logits softcapped before masking), a light causal depthwise-conv module, a second half-step
feed-forward, a final RMSNorm. Attention reads only the past: a token sees itself and the
``context_left - 2`` tokens before it, so outputs never depend on later audio and the tower runs
exactly in chunks (:meth:`Gemma4AudioEncoder.encode_long`): 100 frames/s in, 25 tokens/s out,
90,000 soft tokens per hour of audio. Most linears are
:class:`~omnikit.layers.clippable.ClippableLinear` (bounds loaded with the weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import check_features, feature_contract_inputs, zero_padding
from omnikit.layers.clippable import ClippableLinear
from omnikit.layers.decoder import run_blocks
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.norm import LayerNorm, RMSNorm
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.config_checks import Range
from omnikit.utils.parallel import ParallelPlan

__all__ = ["Gemma4AudioConfig", "Gemma4AudioEncoder", "MultimodalEmbedder", "relative_shift"]


@flat_keywords
@dataclass
class Gemma4AudioConfig(NestedConfig):
    """Hyper-parameters of :class:`Gemma4AudioEncoder`.

    Attributes:
        n_mels: mel bins of the input (the first conv's channels, as in the published tower).
        transformer: the conformer's width, blocks, attention heads and norm epsilon (flat keywords
            ``dim``, ``depth``, ``num_heads``, ``norm_eps``).
        channels: output channels of the two subsampling convs.
        chunk_size, context_left, context_right: blocked attention: queries in blocks of
            ``chunk_size``; a query sees keys ``0 <= q - k < context_left - 1`` (``context_right`` > 0
            is refused: the tower is causal).
        softcap: attention logits are ``softcap * tanh(logits / softcap)`` before masking.
        invalid_logit: the logit of masked keys (finite: a query with no key averages its context).
        conv_kernel: kernel of the causal depthwise conv.
        residual_weight: scale of the half-step feed-forwards.
        clip: activations are clamped to ``[-clip, clip]`` around the norms (``gradient_clipping``).
        out_dim: width of the output projection.
        text_dim: width of the multimodal embedder after it (0: none).
        clipped_linears: the clippable linears keep (and load) their bounds.
    """

    n_mels: int = 128
    transformer: TransformerConfig = nested_field(TransformerConfig, dim=1024, depth=12, num_heads=8, norm_eps=1e-6)
    channels: tuple[int, int] = (128, 32)
    chunk_size: int = 12
    context_left: int = 13
    context_right: int = 0
    softcap: float = 50.0
    invalid_logit: float = -1e9
    conv_kernel: int = 5
    residual_weight: float = 0.5
    clip: float = 1e10
    out_dim: int = 1536
    text_dim: int = field(default=0, metadata={"range": Range(0)})
    clipped_linears: bool = True

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat("dim", "depth", "num_heads", "norm_eps")


def relative_shift(x: torch.Tensor, context: int) -> torch.Tensor:
    """``x (..., C, P)`` logits against ``P`` relative positions -> ``(..., C, context)`` against the keys
    of a block's context: ``out[i, j] = x[i, j - i]`` for ``0 <= j - i < P`` (Transformer-XL's shift;
    other entries hold shifted neighbours or zeros and must be masked)."""
    *lead, rows, positions = x.shape
    x = F.pad(x, (0, context + 1 - positions)).reshape(*lead, rows * (context + 1))
    return x[..., : rows * context].reshape(*lead, rows, context)


class BlockedLocalAttention(nn.Module):
    """Self-attention within a left context, computed block by block. ``(B, T, dim) -> (B, T, dim)``.

    Weights: ``q``, ``k``, ``v``, ``out`` (clippable), ``rel_k`` (projection of the sinusoidal relative
    position table), ``per_dim_scale`` (query scale ``softplus(per_dim_scale) / (sqrt(d) ln 2)``).
    """

    def __init__(self, config: Gemma4AudioConfig) -> None:
        super().__init__()
        dim, heads = config.dim, config.num_heads
        if dim % heads:
            raise OmnikitValueError(f"`num_heads` ({heads}) must divide `dim` ({dim})")
        self.heads, self.head_dim = heads, dim // heads
        self.chunk, self.past = config.chunk_size, config.context_left - 1
        self.context = self.chunk + self.past
        self.window, self.softcap, self.invalid = config.context_left - 1, config.softcap, config.invalid_logit
        self.q, self.k, self.v, self.out = (ClippableLinear(dim, dim, clipped=config.clipped_linears) for _ in range(4))
        self.rel_k = nn.Linear(dim, dim, bias=False)
        self.per_dim_scale = nn.Parameter(torch.zeros(self.head_dim))
        steps = dim // 2
        inv = torch.exp(torch.arange(steps) * -(math.log(10_000.0) / max(steps - 1, 1)))
        distance = torch.arange(self.context // 2, -1, -1)[:, None] * inv  # (P, dim/2), farthest first
        self.register_buffer("positions", torch.cat((distance.sin(), distance.cos()), dim=-1), persistent=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x (B, T, dim)``, ``valid (B, T)`` bool (True on real frames)."""
        batch, length, _ = x.shape
        shape = (batch, length, self.heads, self.head_dim)
        scale = self.head_dim**-0.5 / math.log(2) * F.softplus(self.per_dim_scale.float())
        q = self.q(x).float().view(shape) * scale
        k = self.k(x).float().view(shape) * (math.log(1 + math.e) / math.log(2))
        v = self.v(x).float().view(shape)
        # at least two blocks (padding): a traced block count of 1 would specialise the program to it
        blocks = torch.sym_max((length + self.chunk - 1) // self.chunk, 2)
        q = F.pad(q, (0, 0, 0, 0, 0, blocks * self.chunk - length)).unflatten(1, (blocks, self.chunk))
        k, v = (self._contexts(t, blocks) for t in (k, v))  # (B, blocks, context, H, D)
        rel = self.rel_k(self.positions.to(x.dtype)).float().view(-1, self.heads, self.head_dim)  # (P, H, D)
        content = torch.einsum("bnihd,bnjhd->bhnij", q, k)
        position = relative_shift(torch.einsum("bnihd,phd->bhnip", q, rel), self.context)
        logits = torch.tanh((content + position) / self.softcap) * self.softcap
        logits = logits.masked_fill(~self._allowed(valid, blocks)[:, None], self.invalid)
        out = torch.einsum("bhnij,bnjhd->bnihd", logits.softmax(dim=-1), v)
        return self.out(out.reshape(batch, blocks * self.chunk, -1)[:, :length].to(x.dtype))

    def _contexts(self, t: torch.Tensor, blocks: int) -> torch.Tensor:
        """``(B, T, H, D)`` -> the keys of every block's context ``(B, blocks, context, H, D)``."""
        padded = F.pad(t, (0, 0, 0, 0, self.past, blocks * self.chunk - t.shape[1]))
        return padded[:, self._context_index(blocks, t.device)]

    def _context_index(self, blocks: int, device: torch.device) -> torch.Tensor:
        """``(blocks, context)`` positions, in the sequence padded by ``past`` on the left, of every
        block's keys."""
        return (torch.arange(blocks, device=device) * self.chunk)[:, None] + torch.arange(self.context, device=device)

    def _allowed(self, valid: torch.Tensor, blocks: int) -> torch.Tensor:
        """``(B, blocks, chunk, context)`` bool: key ``j`` of the block's context is a real frame at
        distance ``0 <= q - k < window`` from query ``i``."""
        query = torch.arange(blocks * self.chunk, device=valid.device).view(blocks, self.chunk, 1)
        key = query[:, :1] - self.past + torch.arange(self.context, device=valid.device)  # (blocks, 1, context)
        distance = query - key
        padded = F.pad(valid, (self.past, blocks * self.chunk - valid.shape[1]))
        key_valid = padded[:, self._context_index(blocks, valid.device)][:, :, None, :]  # (B, blocks, 1, context)
        return key_valid & ((distance >= 0) & (distance < self.window))


class HalfStepFeedForward(nn.Module):
    """``x + w * post_norm(fc2(silu(fc1(pre_norm(x)))))`` with clamps around the norms; ``(B, T, dim)``."""

    def __init__(self, config: Gemma4AudioConfig) -> None:
        super().__init__()
        self.pre_norm, self.post_norm = RMSNorm(config.dim, config.norm_eps), RMSNorm(config.dim, config.norm_eps)
        dim, clipped = config.dim, config.clipped_linears
        self.fc1 = ClippableLinear(dim, 4 * dim, clipped=clipped)
        self.fc2 = ClippableLinear(4 * dim, dim, clipped=clipped)
        self.weight, self.clip = config.residual_weight, config.clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = min(self.clip, torch.finfo(x.dtype).max)
        h = self.fc2(F.silu(self.fc1(self.pre_norm(x.clamp(-clip, clip)))))
        return x + self.post_norm(h.clamp(-clip, clip)) * self.weight


class LightConv(nn.Module):
    """``x + end(silu(conv_norm(causal_depthwise_conv(glu(start(pre_norm(x)))))))``; ``(B, T, dim)``."""

    def __init__(self, config: Gemma4AudioConfig) -> None:
        super().__init__()
        dim = config.dim
        self.pre_norm, self.conv_norm = RMSNorm(dim, config.norm_eps), RMSNorm(dim, config.norm_eps)
        self.start = ClippableLinear(dim, 2 * dim, clipped=config.clipped_linears)
        self.end = ClippableLinear(dim, dim, clipped=config.clipped_linears)
        self.conv = nn.Conv1d(dim, dim, config.conv_kernel, groups=dim, bias=False)
        self.clip = config.clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.start(self.pre_norm(x)), dim=-1).transpose(1, 2)
        h = self.conv(F.pad(h, (self.conv.kernel_size[0] - 1, 0))).transpose(1, 2)
        clip = min(self.clip, torch.finfo(h.dtype).max)
        return x + self.end(F.silu(self.conv_norm(h.clamp(-clip, clip))))


class ConformerBlock(nn.Module):
    """Half-step FFN, local attention (pre/post norms), light conv, half-step FFN, final norm."""

    def __init__(self, config: Gemma4AudioConfig) -> None:
        super().__init__()
        eps = config.norm_eps
        self.ff1, self.ff2 = HalfStepFeedForward(config), HalfStepFeedForward(config)
        self.attn_norm, self.attn, self.attn_post_norm = RMSNorm(config.dim, eps), BlockedLocalAttention(config), \
            RMSNorm(config.dim, eps)
        self.conv = LightConv(config)
        self.out_norm = RMSNorm(config.dim, eps)
        self.clip = config.clip

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        clip = min(self.clip, torch.finfo(x.dtype).max)
        x = self.ff1(x)
        x = x + self.attn_post_norm(self.attn(self.attn_norm(x.clamp(-clip, clip)), valid).clamp(-clip, clip))
        x = self.ff2(self.conv(x))
        return self.out_norm(x.clamp(-clip, clip))


class MultimodalEmbedder(nn.Module):
    """Soft tokens into the language model's width: ``proj(rms(x))`` (the norm has no weight)."""

    def __init__(self, dim: int, text_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, eps, scale=False)
        self.proj = nn.Linear(dim, text_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class Gemma4AudioEncoder(nn.Module):
    """``features (B, n_mels, T)``, ``lengths (B,)`` -> :class:`EncoderOutput` ``(B, ceil(T/4), out)``
    (``out`` = ``text_dim`` with the embedder, else ``out_dim``); padded outputs are zeroed.

    Weights: ``conv0``/``norm0``/``conv1``/``norm1``/``proj`` (subsampling), ``blocks.{i}``
    (:class:`ConformerBlock`), ``out_proj``, ``embed`` (:class:`MultimodalEmbedder`, with ``text_dim``).
    Set ``gradient_checkpointing = True`` to recompute the blocks in backward.
    """

    def __init__(self, config: Gemma4AudioConfig) -> None:
        super().__init__()
        for name in ("n_mels", "dim", "depth", "num_heads", "chunk_size", "context_left", "conv_kernel", "out_dim"):
            check_positive(getattr(config, name), name)
        if config.context_right:
            raise OmnikitValueError(f"`context_right` expected 0 (a causal tower) but got {config.context_right}")
        self.config = config
        c0, c1 = config.channels
        self.conv0 = nn.Conv2d(1, c0, 3, stride=2, padding=1, bias=False)
        self.norm0 = LayerNorm(c0, eps=config.norm_eps, bias=False)
        self.conv1 = nn.Conv2d(c0, c1, 3, stride=2, padding=1, bias=False)
        self.norm1 = LayerNorm(c1, eps=config.norm_eps, bias=False)
        bins = ((config.n_mels + 1) // 2 + 1) // 2  # mel bins after the two stride-2 convs
        self.proj = nn.Linear(c1 * bins, config.dim, bias=False)
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.depth))
        self.out_proj = nn.Linear(config.dim, config.out_dim)
        self.embed = MultimodalEmbedder(config.out_dim, config.text_dim, config.norm_eps) if config.text_dim else None
        self.gradient_checkpointing = False

    @property
    def output_dim(self) -> int:
        return self.config.text_dim or self.config.out_dim

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per item: ``ceil(ceil(n / 2) / 2)`` (two stride-2 convs; mel bins shrink the same way)."""
        half = (torch.as_tensor(lengths) + 1) // 2
        return (half + 1) // 2

    def parallel_plan(self) -> ParallelPlan:
        """Every block is an FSDP unit."""
        return ParallelPlan(fsdp_units=list(self.blocks))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        x, n = check_features(features, lengths, self.config.n_mels, like=self)
        h = zero_padding(x, n).transpose(1, 2)[:, None]  # (B, 1, T, n_mels)
        half = (n + 1) // 2
        h = F.relu(self.norm0(self.conv0(h).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        h = h * lengths_to_mask(half, h.shape[2])[:, None, :, None].to(h.dtype)
        h = F.relu(self.norm1(self.conv1(h).permute(0, 2, 3, 1).contiguous()))  # (B, T', F', C)
        h = self.proj(h.flatten(2))  # (B, T', F' * C), channels fastest
        out_lengths = self.output_lengths(n)
        valid = lengths_to_mask(out_lengths, h.shape[1])
        h, _ = run_blocks(self.blocks, h, lambda block: {"valid": valid},
                          checkpointing=self.gradient_checkpointing and self.training, return_aux=False)
        h = self.out_proj(h)
        if self.embed is not None:
            h = self.embed(h)
        return EncoderOutput(h.masked_fill(~valid[..., None], 0), out_lengths)

    @property
    def history_frames(self) -> int:
        """Input frames before a token that can reach it: every block looks back ``context_left - 2``
        tokens (attention) plus ``conv_kernel - 1`` (the causal conv), a token is 4 frames, and the
        subsampling convs read 3 frames more."""
        cfg = self.config
        return 4 * cfg.depth * (cfg.context_left - 2 + cfg.conv_kernel - 1) + 4

    @torch.no_grad()
    def encode_long(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None, *, chunk_frames: int = 3000
    ) -> EncoderOutput:
        """:meth:`forward` of audio of any length in chunks of ``chunk_frames`` input frames (a multiple
        of 4; default 30 s at 100 frames/s), each run with :attr:`history_frames` of earlier audio and
        8 frames of later audio; equal to one pass (the tower is causal and local). Peak memory
        follows ``chunk_frames + history_frames``, not the audio length. Inference only."""
        check_positive(chunk_frames, "chunk_frames")
        if chunk_frames % 4:
            raise OmnikitValueError(f"`chunk_frames` expected a multiple of 4 but got {chunk_frames}")
        x, n = check_features(features, lengths, self.config.n_mels)
        history, total = self.history_frames, x.shape[-1]
        pieces = []
        for start in range(0, total, chunk_frames):
            first = max(0, start - history)
            stop = min(total, start + chunk_frames + 8)
            piece_lengths = (n - first).clamp(1, stop - first)
            out = self(x[..., first:stop], piece_lengths).hidden_states
            keep = (start - first) // 4
            pieces.append(out[:, keep: keep + chunk_frames // 4])
        out_lengths = self.output_lengths(n)
        hidden = torch.cat(pieces, dim=1)[:, : -(-total // 4)]
        valid = lengths_to_mask(out_lengths, hidden.shape[1])
        return EncoderOutput(hidden.masked_fill(~valid[..., None], 0), out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.n_mels, lengths, seed)
