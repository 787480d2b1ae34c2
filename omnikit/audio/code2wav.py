"""Qwen3-Omni's Code2Wav: multi-codebook codec codes -> 24 kHz waveform, with a causal ConvNet.

Published layout (Qwen3-Omni-30B-A3B): 16 codebooks of 2048 codes at 12.5 frames/s; the code
embeddings of a frame are averaged, an 8-layer sliding-window (72 frames) causal transformer
with layer scales refines them, two ``x2`` transposed-conv + ConvNeXt stages upsample, then a
BigVGAN-style decoder (``x8, x5, x4, x3`` transposed convs, dilated residual units with
SnakeBeta activations) gives one sample per ``2*2*8*5*4*3 = 1920`` per frame, clamped to [-1, 1].

Every convolution is causal; each decoder transposed conv trims ``stride`` samples on both
sides, so its output lags one input step behind: ``F`` frames give
:meth:`Code2Wav.output_lengths` samples, slightly fewer than ``1920 * F`` (the published model
decodes long sequences in overlapping chunks). No output sample depends on a later frame, so a
padded batch equals its items decoded alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.snake import Snake
from omnikit.layers.conv import CausalConv1d
from omnikit.layers.decoder import CachedPositions, DecoderBlock, run_blocks
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.norm import LayerNorm, RMSNorm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import traceable_output
from omnikit.streaming import StreamingContainer, StreamingModule, StreamingState
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_ids, check_lengths_or_full, check_positive, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.parallel import ParallelPlan

__all__ = ["Code2Wav", "Code2WavConfig", "Code2WavOutput", "LayerScaleBlock", "SnakeBeta", "TrimmedConvTranspose1d"]


@flat_keywords
@dataclass
class Code2WavConfig(NestedConfig):
    """Hyper-parameters of :class:`Code2Wav` (transformers' ``Qwen3OmniMoeCode2WavConfig`` names in brackets).

    Attributes:
        num_codebooks, codebook_size: the code layout (num_quantizers, codebook_size).
        dim, depth, num_heads, num_kv_heads, mlp_hidden, sliding_window, norm_eps, rope_base,
            layer_scale: the pre-transformer (hidden_size, num_hidden_layers, ..., layer_scale_initial_scale).
        upsampling_ratios: ConvNeXt upsampling stages at width ``dim``.
        decoder_dim, upsample_rates: the ConvNet decoder; stage ``i`` has width ``decoder_dim / 2**(i+1)``.
    """

    num_codebooks: int = 16
    codebook_size: int = 2048
    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=1024, depth=8, num_heads=16, num_kv_heads=16, mlp_hidden=3072, window=72, norm_eps=1e-5,
        rope_base=10000.0)
    layer_scale: float = 0.01
    attention_bias: bool = False
    upsampling_ratios: tuple[int, ...] = (2, 2)
    decoder_dim: int = 1536
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)
    sample_rate: int = 24000
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "num_kv_heads", "mlp_hidden", "norm_eps", "rope_base", sliding_window="window")


@traceable_output
@dataclass
class Code2WavOutput:
    """What :meth:`Code2Wav.forward` returns.

    Attributes:
        hidden_states: ``(B, S, 1)`` the waveform, samples along dim 1 (zero past ``lengths``).
        lengths: ``(B,)`` valid samples per item.
        audio: ``(B, 1, S)`` the same waveform in the codec layout.
    """

    hidden_states: torch.Tensor
    lengths: torch.Tensor
    audio: torch.Tensor


class SnakeBeta(Snake):
    """``x + sin^2(x * e^alpha) / (e^beta + 1e-9)`` per channel, on ``(B, C, T)``: :class:`Snake` with a
    separate ``beta``, both on a log scale."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, beta=True, log_scale=True)


@dataclass
class TransposeState(StreamingState):
    """The last input step of the previous chunk ``(B, C_in, 1)`` (its kernel reaches into this chunk)."""

    batch_size: int
    tail: torch.Tensor | None = None


class TrimmedConvTranspose1d(StreamingModule[TransposeState]):
    """``ConvTranspose1d(kernel, stride)`` with ``kernel - stride`` samples cut from both ends.

    ``(B, C_in, T) -> (B, C_out, T')``: ``T' = T * stride`` when ``kernel == stride``,
    ``(T - 1) * stride`` when ``kernel == 2 * stride``; output step ``t`` sees inputs up to ``t // stride + 1``.
    Streaming, each chunk emits the samples its inputs complete (the previous chunk's last input step is kept),
    so the chunks add up to the offline output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if not stride <= kernel_size <= 2 * stride:
            raise OmnikitValueError(f"`kernel_size` ({kernel_size}) must lie in [stride, 2 * stride] (stride {stride})")
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.trim = kernel_size - stride

    def init_streaming_state(self, batch_size: int) -> TransposeState:
        return TransposeState(batch_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        return (lengths - 1) * conv.stride[0] + conv.kernel_size[0] - 2 * self.trim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.streaming_state
        if state is None:
            y = self.conv(x)
            return y[..., self.trim : y.shape[-1] - self.trim]
        stride, steps = self.conv.stride[0], x.shape[-1]
        if steps == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        if state.tail is None:  # samples before `steps * stride` are complete; the first `trim` are cut
            out = self.conv(x)[..., self.trim : steps * stride]
        else:  # the tail's step comes first: its samples before `stride` were emitted with the previous chunk
            out = self.conv(torch.cat((state.tail, x), dim=-1))[..., stride : (steps + 1) * stride]
        state.tail = x[..., -1:]
        return out


class ConvNeXtBlock(nn.Module):
    """Causal depthwise conv (k=7) -> LayerNorm -> Linear(4x) -> GELU -> Linear -> ``gamma`` scale, residual.

    ``(B, C, T) -> (B, C, T)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, 7, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class ResidualUnit(nn.Module):
    """``x + conv2(snake(conv1(snake(x))))`` with a dilated causal ``k=7`` conv and a ``k=1`` conv."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv1d(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class DecoderStage(nn.Module):
    """Snake -> ``x rate`` transposed conv halving the width -> residual units with dilations 1, 3, 9."""

    def __init__(self, in_dim: int, rate: int) -> None:
        super().__init__()
        out_dim = in_dim // 2
        self.block = nn.ModuleList([
            SnakeBeta(in_dim), TrimmedConvTranspose1d(in_dim, out_dim, 2 * rate, rate),
            *(ResidualUnit(out_dim, d) for d in (1, 3, 9)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.block:
            x = layer(x)
        return x


class LayerScaleBlock(DecoderBlock):
    """A :class:`DecoderBlock` whose attention and MLP outputs are scaled per channel before the residual:
    ``h = x + attn_scale * attn(norm1(x)); y = h + mlp_scale * mlp(norm2(h))``. ``(B, T, dim) -> (B, T, dim)``."""

    def __init__(self, dim: int, *args: Any, layer_scale: float = 0.01, **kwargs: Any) -> None:
        super().__init__(dim, *args, **kwargs)
        self.attn_scale = nn.Parameter(torch.full((dim,), layer_scale))
        self.mlp_scale = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor], **_: Any) -> torch.Tensor:
        h = x + self.attn_scale * self.attn(self.norm1(x), rope=rope)
        return h + self.mlp_scale * self.mlp(self.norm2(h))


class Code2Wav(CachedPositions, StreamingContainer, nn.Module):
    """``codes (B, K, F) -> Code2WavOutput`` (waveform ``(B, 1, S)`` at ``sample_rate``).

    ``decode(codes)`` returns the ``(B, 1, S)`` waveform alone (transformers' ``Qwen3OmniMoeCode2Wav``).
    Inside ``with code2wav.streaming(B):`` successive ``decode`` calls continue one another (attention KV
    cache, causal convolution and transposed-convolution state): their waveforms add up to ``decode`` of
    all frames, and each call costs only its own frames.
    """

    def __init__(self, config: Code2WavConfig) -> None:
        super().__init__()
        c = config
        if c.decoder_dim % 2 ** len(c.upsample_rates):
            raise OmnikitValueError(
                f"`decoder_dim` ({c.decoder_dim}) must be divisible by 2**len(upsample_rates)"
                f" = {2 ** len(c.upsample_rates)}"
            )
        self.config = c
        self.code_embedding = nn.Embedding(c.num_codebooks * c.codebook_size, c.dim)
        self.register_buffer("code_offset", torch.arange(c.num_codebooks).view(1, -1, 1) * c.codebook_size,
                             persistent=False)
        self.rotary = RotaryEmbedding(c.dim // c.num_heads, c.rope_base)
        self.blocks = nn.ModuleList(
            LayerScaleBlock(
                c.dim, c.num_heads, c.num_kv_heads, mlp_hidden=c.mlp_hidden, norm_eps=c.norm_eps, qk_norm=False,
                qkv_bias=c.attention_bias, out_bias=c.attention_bias, rotary=self.rotary,
                sliding_window=c.sliding_window, backend=c.backend, layer_scale=c.layer_scale,
            )
            for _ in range(c.depth)
        )
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.upsample = nn.ModuleList(
            nn.ModuleList([TrimmedConvTranspose1d(c.dim, c.dim, r, r), ConvNeXtBlock(c.dim)])
            for r in c.upsampling_ratios
        )
        out_dim = c.decoder_dim // 2 ** len(c.upsample_rates)
        self.decoder = nn.ModuleList([
            CausalConv1d(c.dim, c.decoder_dim, 7),
            *(DecoderStage(c.decoder_dim // 2**i, r) for i, r in enumerate(c.upsample_rates)),
            SnakeBeta(out_dim),
            CausalConv1d(out_dim, 1, 7),
        ])
        self.sample_rate = c.sample_rate
        self.num_codebooks, self.codebook_size = c.num_codebooks, c.codebook_size  # the CodeDecoder interface
        self.hop = math.prod(c.upsampling_ratios) * math.prod(c.upsample_rates)
        self.frame_rate = c.sample_rate / self.hop
        self.num_codebooks, self.codebook_size = c.num_codebooks, c.codebook_size
        self.output_dim = 1
        self.gradient_checkpointing = False

    def parallel_plan(self) -> ParallelPlan:
        """Block by block and each upsampling decoder stage; ``decode`` is hooked as ``forward`` is."""
        stages = [m for m in self.decoder if isinstance(m, DecoderStage)]
        return ParallelPlan(fsdp_units=[*self.blocks, *stages], fsdp_methods=[(self, "decode")])

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Samples produced from ``lengths`` frames (each transposed conv's length arithmetic in turn)."""
        for stage in self.upsample:
            lengths = stage[0].output_lengths(lengths)
        for stage in self.decoder[1:-2]:
            lengths = stage.block[1].output_lengths(lengths)
        return lengths

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, F)`` int codes -> ``(B, 1, S)`` waveform in [-1, 1]."""
        check_tensor(codes, "codes", shape=("B", self.num_codebooks, "F"), floating=False)
        if not codes.shape[-1]:
            raise OmnikitValueError(f"`codes` expected at least one frame but got shape {tuple(codes.shape)}")
        check_ids(codes, "codes", self.codebook_size, what="ids")
        x = self.code_embedding(codes + self.code_offset).mean(1)
        start = self.cache_position  # frames decoded before in an open stream (0 offline)
        rope = self.rotary(start + torch.arange(x.shape[1], device=x.device))
        x, _ = run_blocks(self.blocks, x, lambda block: {"rope": rope},
                          checkpointing=self.gradient_checkpointing and self.training, return_aux=False)
        x = self.norm(x).transpose(1, 2)
        for stage in self.upsample:
            for layer in stage:
                x = layer(x)
        for layer in self.decoder:
            x = layer(x)
        return x.clamp(-1.0, 1.0)

    def chunked_decode(self, codes: torch.Tensor, chunk_size: int = 300, left_context: int = 25) -> torch.Tensor:
        """Decode ``(B, K, F)`` codes ``chunk_size`` frames at a time, each chunk with up to ``left_context``
        earlier frames in front whose samples are dropped (bounded memory for long speech, as transformers'
        ``chunked_decode``; it equals :meth:`decode` only up to the context the chunks cut off)."""
        check_positive(chunk_size, "chunk_size")
        check_positive(left_context, "left_context", allow_zero=True)
        pieces, start = [], 0
        while start < codes.shape[-1]:
            end = min(start + chunk_size, codes.shape[-1])
            context = left_context if start > left_context else start
            pieces.append(self.decode(codes[..., start - context : end])[..., context * self.hop :])
            start = end
        return torch.cat(pieces, dim=-1)

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> Code2WavOutput:
        """``codes (B, K, F)``, ``lengths (B,)`` valid frames -> :class:`Code2WavOutput`."""
        audio = self.decode(codes)
        lengths = check_lengths_or_full(lengths, codes, axis=-1, of="codes")
        samples = self.output_lengths(lengths)
        audio = audio * lengths_to_mask(samples, audio.shape[-1])[:, None].to(audio.dtype)
        return Code2WavOutput(audio.transpose(1, 2), samples, audio)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, self.codebook_size, (len(lengths), self.num_codebooks, max(lengths)), generator=g)
        lens = torch.tensor(list(lengths))
        return ContractInputs({"codes": codes, "lengths": lens}, lens, {"codes": 2}, "lengths")
