"""Mimi (Kyutai's streaming speech codec) as an omnikit codec tokenizer, with its published structure.

    wav (B, C, S) -> SEANet encoder -> causal transformer -> strided conv (25 -> 12.5 Hz)
                  -> split RVQ (1 semantic + n-1 acoustic codebooks)      = codes (B, K, F)
    codes -> RVQ sum -> grouped transposed conv -> causal transformer -> SEANet decoder = wav

Layers follow the published checkpoints: convolutions pad causally (left ``kernel - stride``,
right only what makes the last frame whole), the downsampling conv pads by replicating edge
samples, the transformers use LayerNorm, rotary positions, a sliding attention window and
learned per-channel layer scales; codebooks are stored as ``embed_sum / cluster_usage``.
:func:`omnikit.convert.load_hf` builds it from a transformers ``MimiModel`` checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import feature_contract_inputs
from omnikit.audio.seanet import CausalConvTranspose1d
from omnikit.audio.signal import check_sample_rate, check_waveform
from omnikit.layers import LayerNorm
from omnikit.layers.attention import Attention
from omnikit.layers.conv import CausalConv1d
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.streaming import StreamingContainer, streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_ids, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field

__all__ = ["MimiConfig", "MimiTokenizer"]


@flat_keywords
@dataclass
class MimiConfig(NestedConfig):
    """Hyper-parameters of :class:`MimiTokenizer` (defaults: the published ``kyutai/mimi``)."""

    sample_rate: int = 24000
    channels: int = 1
    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=512, depth=8, num_heads=8, num_kv_heads=8, head_dim=64, mlp_hidden=2048,
        rope_base=10000.0, norm_eps=1e-5, window=250)
    n_filters: int = 64
    n_residual: int = 1
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    conv_shortcut: bool = False
    pad_mode: str = "constant"
    frame_rate: float = 12.5
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic: int = 1
    upsample_groups: int = 512
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "rope_base", "norm_eps",
        sliding_window="window")

    @property
    def latent_stride(self) -> int:
        """Stride of the conv from the SEANet rate (``sample_rate / prod(ratios)``) to ``frame_rate``."""
        return int(math.ceil(self.sample_rate / math.prod(self.ratios)) / self.frame_rate)


def mimi_conv(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, dilation: int = 1,
              bias: bool = True, pad_mode: str = "constant") -> CausalConv1d:
    """Mimi's causal conv ``(B, C_in, T) -> (B, C_out, ceil(T / stride))``: left padding ``kernel - stride``
    (dilated kernel), right padding only to complete the last frame, in ``pad_mode``; streams."""
    return CausalConv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias,
                        pad_mode=pad_mode, pad_last=True)


class MimiResidual(nn.Module):
    """``x + block(x)`` with ``block = ELU, conv k3 (dilated), ELU, conv k1`` (``shortcut``: a k1 conv or identity)."""

    def __init__(self, channels: int, config: MimiConfig, dilation: int) -> None:
        super().__init__()
        hidden, pad = channels // config.compress, config.pad_mode
        self.block = nn.Sequential(
            nn.ELU(), mimi_conv(channels, hidden, config.residual_kernel_size, dilation=dilation, pad_mode=pad),
            nn.ELU(), mimi_conv(hidden, channels, 1, pad_mode=pad),
        )
        self.shortcut = mimi_conv(channels, channels, 1, pad_mode=config.pad_mode) if config.conv_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.shortcut is None else self.shortcut(x)) + self.block(x)


def _residuals(channels: int, config: MimiConfig) -> list[nn.Module]:
    return [MimiResidual(channels, config, config.dilation_base**j) for j in range(config.n_residual)]


def seanet_encoder(config: MimiConfig) -> nn.Sequential:
    """``(B, channels, S) -> (B, dim, S / prod(ratios))``."""
    width = config.n_filters
    layers: list[nn.Module] = [mimi_conv(config.channels, width, config.kernel_size, pad_mode=config.pad_mode)]
    for ratio in reversed(config.ratios):
        layers += [*_residuals(width, config), nn.ELU(),
                   mimi_conv(width, 2 * width, 2 * ratio, stride=ratio, pad_mode=config.pad_mode)]
        width *= 2
    layers += [nn.ELU(), mimi_conv(width, config.dim, config.last_kernel_size, pad_mode=config.pad_mode)]
    return nn.Sequential(*layers)


def seanet_decoder(config: MimiConfig) -> nn.Sequential:
    """``(B, dim, F) -> (B, channels, F * prod(ratios))``."""
    width = config.n_filters * 2 ** len(config.ratios)
    layers: list[nn.Module] = [mimi_conv(config.dim, width, config.kernel_size, pad_mode=config.pad_mode)]
    for ratio in config.ratios:
        layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio),
                   *_residuals(width // 2, config)]
        width //= 2
    layers += [nn.ELU(), mimi_conv(width, config.channels, config.last_kernel_size, pad_mode=config.pad_mode)]
    return nn.Sequential(*layers)


class MimiTransformerLayer(nn.Module):
    """Pre-LN causal block with layer scales: ``h = x + s1 * attn(ln1(x))``, ``y = h + s2 * mlp(ln2(h))``."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config.dim, config.num_heads, config.num_kv_heads, config.head_dim, causal=True,
                              sliding_window=config.sliding_window, backend=config.backend)
        self.attn_scale = nn.Parameter(torch.full((config.dim,), 0.01))
        self.norm2 = LayerNorm(config.dim, eps=config.norm_eps)
        self.fc1 = nn.Linear(config.dim, config.mlp_hidden, bias=False)
        self.fc2 = nn.Linear(config.mlp_hidden, config.dim, bias=False)
        self.mlp_scale = nn.Parameter(torch.full((config.dim,), 0.01))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = x + self.attn_scale * self.attn(self.norm1(x), rope=rope)
        return h + self.mlp_scale * self.fc2(F.gelu(self.fc1(self.norm2(h))))


class MimiTransformer(nn.Module):
    """``(B, dim, T) -> (B, dim, T)``: causal transformer over the frames (channels-first in and out);
    inside a stream its attention layers cache keys and values and positions continue."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_base)
        self.layers = nn.ModuleList(MimiTransformerLayer(config) for _ in range(config.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        rope = self.rotary(self.layers[0].attn.cache_position + torch.arange(h.shape[1], device=h.device))
        for layer in self.layers:
            h = layer(h, rope)
        return h.transpose(1, 2)


class MimiRVQ(nn.Module):
    """Residual VQ over ``n`` codebooks of ``(codebook_size, codebook_dim)`` behind k1 projections.

    Codebooks are stored as buffers ``embed_sum`` and ``cluster_usage`` (EMA statistics); a code's
    vector is ``embed_sum / max(cluster_usage, 1e-5)``.
    """

    def __init__(self, config: MimiConfig, n: int) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(config.dim, config.codebook_dim, 1, bias=False)
        self.output_proj = nn.Conv1d(config.codebook_dim, config.dim, 1, bias=False)
        self.layers = nn.ModuleList(MimiCodebook(config) for _ in range(n))

    def quantize(self, latents: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents (B, dim, F)`` -> ``codes (B, n, F)`` and their decoded latents ``(B, dim, F)``.

        The gradient of the decoded latents passes straight through the codebooks to ``latents``
        (the codebooks are EMA statistics, not trained by gradients). No frames (a stream's chunk
        shorter than a frame) give empty results.
        """
        if not latents.shape[-1]:
            return latents.new_zeros(latents.shape[0], n, 0, dtype=torch.long), latents
        projected = self.input_proj(latents).transpose(1, 2)
        residual, codes = projected, []
        for codebook in self.layers[:n]:
            index = codebook.encode(residual)
            residual = residual - codebook.decode(index)
            codes.append(index)
        codes = torch.stack(codes, dim=1)
        total = self._sum(codes)
        straight = total + (projected - projected.detach())  # the value of `total`, the gradient of `projected`
        return codes, self.output_proj(straight.transpose(1, 2))

    def _sum(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(codebook.decode(codes[:, i]) for i, codebook in enumerate(self.layers[: codes.shape[1]]))

    def encode(self, latents: torch.Tensor, n: int) -> torch.Tensor:
        """``latents (B, dim, F) -> codes (B, n, F)``."""
        return self.quantize(latents, n)[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, n, F) -> latents (B, dim, F)``."""
        if not codes.shape[-1]:
            return self.output_proj.weight.new_zeros(codes.shape[0], self.output_proj.out_channels, 0)
        return self.output_proj(self._sum(codes).transpose(1, 2))


class MimiCodebook(nn.Module):
    """Nearest-neighbour (Euclidean) codebook ``(codebook_size, codebook_dim)``."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.ones(1))
        self.register_buffer("cluster_usage", torch.ones(config.codebook_size))
        # small random codes until a checkpoint fills them (all-zero codebooks would map every frame to code 0;
        # a fresh encoder's latents are small, its transformer layer scales being 0.01)
        self.register_buffer("embed_sum", 0.01 * torch.randn(config.codebook_size, config.codebook_dim))

    @property
    def embed(self) -> torch.Tensor:
        return self.embed_sum / self.cluster_usage.clamp(min=1e-5)[:, None]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, d) -> (B, F)`` index of the nearest code."""
        return torch.cdist(x.float(), self.embed.float()[None]).argmin(dim=-1)

    def decode(self, index: torch.Tensor) -> torch.Tensor:
        return F.embedding(index, self.embed)


class MimiTokenizer(StreamingContainer, nn.Module):
    """Codec interface: ``encode(wav (B, C, S)) -> codes (B, K, F)``, ``decode(codes) -> wav (B, C, F * hop)``.

    ``num_codebooks`` (default: all ``num_quantizers``) sets how many codebooks ``encode`` returns;
    the first ``num_semantic`` come from the semantic quantizer. ``forward(wav)`` reconstructs
    ``wav`` (trimmed to its length).

    Streaming: inside ``with tok.streaming(B):`` ``encode`` takes the next samples and returns the codes of
    the frames they complete, ``decode`` the next codes and returns their samples (both directions keep
    their own state, so one stream can encode the user and decode the reply); chunks of whole frames
    (``hop`` samples) give the whole-clip codes and audio piece by piece. ``streaming(B, max_len=N)``
    preallocates the transformers' key/value caches for ``N`` frames (fixed shapes for ``torch.compile``).
    """

    supports_streaming = True

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        if not 0 < config.num_semantic < config.num_quantizers:
            raise OmnikitValueError(
                f"`num_semantic` expected in [1, num_quantizers={config.num_quantizers}) but got {config.num_semantic}"
            )
        self.config = config
        stride = config.latent_stride
        self.encoder = seanet_encoder(config)
        self.encoder_transformer = MimiTransformer(config)
        self.downsample = mimi_conv(config.dim, config.dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate")
        self.semantic = MimiRVQ(config, config.num_semantic)
        self.acoustic = MimiRVQ(config, config.num_quantizers - config.num_semantic)
        self.upsample = CausalConvTranspose1d(config.dim, config.dim, 2 * stride, stride=stride,
                                          groups=config.upsample_groups, bias=False)
        self.decoder_transformer = MimiTransformer(config)
        self.decoder = seanet_decoder(config)
        self.num_codebooks = config.num_quantizers

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def hop(self) -> int:
        """Samples per frame (1920 at 24 kHz, 12.5 Hz)."""
        return math.prod(self.config.ratios) * self.config.latent_stride

    @property
    def stream_chunk(self) -> int:
        """Samples per chunk of the contract's streaming check: one frame."""
        return self.hop

    def streaming(self, batch_size: int, *, max_len: int | None = None) -> AbstractContextManager[nn.Module]:
        """Open a stream (see the class docstring); ``max_len`` counts frames (the transformers run
        ``latent_stride`` positions per frame)."""
        positions = None if max_len is None else max_len * self.config.latent_stride
        return streaming(self, batch_size, max_len=positions)

    @property
    def stream_step(self) -> int:
        """Samples that make one output step: a whole frame (offline, a partial last frame is padded; a
        stream waits for its samples)."""
        return self.hop

    @property
    def legacy_state_prefixes(self) -> dict[str, str]:
        """Checkpoints written before the transposed convolutions streamed named their weights ``conv.``."""
        names = [f"decoder.{i}." for i, m in enumerate(self.decoder) if isinstance(m, CausalConvTranspose1d)]
        return {f"{name}conv.": f"{name}convtr." for name in (*names, "upsample.")}

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, channels, S)`` -> codes ``(B, num_codebooks, F)`` and decoded latents ``(B, dim, F)``
        (gradients pass the quantizers straight through)."""
        if self.downsample.streaming_state is not None:  # the encoder side of an open stream (no module walk)
            self.downsample.streaming_state.check_batch(x.shape[0], "wav")
        latents = self.downsample(self.encoder_transformer(self.encoder(x.to(self.downsample.conv.weight.dtype))))
        codes, quantized = self.semantic.quantize(latents, self.config.num_semantic)
        acoustic = self.num_codebooks - self.config.num_semantic
        if acoustic:
            acoustic_codes, acoustic_latents = self.acoustic.quantize(latents, acoustic)
            codes, quantized = torch.cat((codes, acoustic_codes), dim=1), quantized + acoustic_latents
        return codes, quantized

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, *, sample_rate: int | None = None) -> torch.Tensor:
        """``wav (B, channels, S)`` -> ``codes (B, num_codebooks, ceil(S / hop))`` int64; a given
        ``sample_rate`` must be the codec's."""
        check_sample_rate(sample_rate, self.sample_rate)
        x, _ = check_waveform(wav, channels=self.config.channels)
        return self._quantize(x)[0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F)`` with ``num_semantic <= K <= num_quantizers`` -> ``wav (B, channels, F * hop)``."""
        check_tensor(codes, "codes", ndim=3, floating=False)
        n_sem = self.config.num_semantic
        if not n_sem <= codes.shape[1] <= self.config.num_quantizers:
            raise OmnikitValueError(
                f"`codes` expected between {n_sem} and {self.config.num_quantizers} codebooks but got {codes.shape[1]}"
            )
        check_ids(codes, "codes", self.codebook_size, what="codes")
        if self.upsample.streaming_state is not None:  # the decoder side of an open stream
            self.upsample.streaming_state.check_batch(codes.shape[0], "codes")
        latents = self.semantic.decode(codes[:, :n_sem])
        if codes.shape[1] > n_sem:
            latents = latents + self.acoustic.decode(codes[:, n_sem:])
        return self.decoder(self.decoder_transformer(self.upsample(latents)))

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, *, framed: bool = False
    ) -> torch.Tensor | EncoderOutput:
        """Reconstruction ``(B, channels, S)``: ``decode(encode(wav))`` trimmed to the input length, with
        gradients passed straight through the quantizers (a training pass for everything but the
        codebooks). Samples past ``lengths (B,)`` are zeroed first.

        With ``framed``, an :class:`~omnikit.outputs.EncoderOutput` instead: the untrimmed reconstruction
        cut into codec frames, ``(B, F, channels * hop)``, and the valid frames ``ceil(lengths / hop)``.
        """
        x, n = check_waveform(wav, lengths, channels=self.config.channels)
        audio = self.decoder(self.decoder_transformer(self.upsample(self._quantize(x)[1])))
        streamed = self.upsample.streaming_state is not None
        if not framed:
            return audio if streamed else audio[..., : wav.shape[-1]]
        batch, channels, samples = audio.shape
        frames = audio.view(batch, channels, samples // self.hop, self.hop).transpose(1, 2)
        lengths = torch.full_like(n, samples // self.hop) if streamed else self.output_lengths(n)
        return EncoderOutput(frames.reshape(batch, samples // self.hop, channels * self.hop), lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Waveforms of ``lengths[b]`` whole frames (``lengths[b] * hop`` samples), reconstructed ``framed``."""
        inputs = feature_contract_inputs(self.config.channels, [n * self.hop for n in lengths], seed, name="wav",
                                         scale=0.1)
        inputs.kwargs["framed"] = True
        return inputs

    def output_lengths(self, lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Frames per item: ``ceil(lengths / hop)``."""
        return -(-torch.as_tensor(lengths) // self.hop)
