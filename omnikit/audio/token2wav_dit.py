"""Qwen2.5-Omni's token2wav DiT: codec codes + a voice -> mel spectrogram, by conditional flow matching.

The velocity model (a diffusion transformer, DiT) sees, per mel frame, the current sample ``x``,
the code embedding (each 50 Hz code repeated ``repeats`` times to the 100 Hz mel rate), the
ECAPA-TDNN embedding of a reference mel (the voice's timbre; :class:`~omnikit.audio.ecapa.SpeakerEncoder`)
and a speaker x-vector (``conditioning``), concatenated and projected to ``dim``. The flow time
enters every block through adaptive LayerNorms (AdaLN-Zero: shift, scale and gate from the time
embedding). Attention is bidirectional within blocks of ``block_size`` frames; the layers in
``look_backward_layers`` also see the previous block, those in ``look_ahead_layers`` the next one.
Rotary positions (adjacent pairs) rotate the first head only, as the published weights were trained.

Sampling (:meth:`Token2WavDiT.sample`) integrates the velocity from Gaussian noise with
:func:`~omnikit.audio.flow_matching.rk4_integrate` over swayed times, with classifier-free
guidance ``v_c + (v_c - v_u) * guidance_scale``: ``v_u`` drops the voice (zero reference mel and
x-vector) and the codes (all id 0). Everything but ``x`` and the time is the same at every ODE
step, so the conditioning's part of the input projection is computed once per call.

transformers' dropout (0.1, training only) is not reproduced: this module is for inference and
fine-tuning without dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.ecapa import SpeakerEncoder
from omnikit.audio.flow_matching import rk4_integrate, sway_times
from omnikit.layers.attention import Attention
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.utils.checks import OmnikitValueError, check_ids, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.config_checks import NON_NEGATIVE

__all__ = ["DiTBlock", "DiTConfig", "Token2WavDiT"]


@flat_keywords
@dataclass
class DiTConfig(NestedConfig):
    """Hyper-parameters of :class:`Token2WavDiT` (transformers' ``Qwen2_5OmniDiTConfig`` names in brackets;
    the defaults are the published Qwen2.5-Omni-7B values).

    Attributes:
        transformer: the blocks' ``dim``, ``depth``, ``num_heads``, ``head_dim`` and ``rope_base`` (hidden_size,
            num_hidden_layers, num_attention_heads, head_dim, rope_theta), also read and given as flat keywords.
        ff_mult: MLP width over ``dim``.
        num_embeds, emb_dim, repeats: codebook size, code embedding width, mel frames per code.
        mel_dim: mel bins.
        block_size, look_ahead_layers, look_backward_layers: the block attention pattern (indices past
            ``depth`` name no layer, as in transformers, where a shallow config keeps the published lists).
        xvector_dim: the speaker x-vector width (enc_emb_dim).
        speaker_dim, speaker_channels, speaker_kernel_sizes, speaker_dilations, speaker_attention_channels,
            speaker_res2net_scale, speaker_se_channels: the ECAPA-TDNN (enc_dim, enc_channels, ...).
        max_positions: longest mel (max_position_embeddings).
    """

    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=1024, depth=22, num_heads=16, head_dim=64, rope_base=10000.0)
    ff_mult: int = 2
    num_embeds: int = 8193
    emb_dim: int = 512
    repeats: int = 2
    mel_dim: int = 80
    block_size: int = 24
    look_ahead_layers: tuple[int, ...] = field(default=(10,), metadata={"range": NON_NEGATIVE})
    look_backward_layers: tuple[int, ...] = field(default=(0, 20), metadata={"range": NON_NEGATIVE})
    xvector_dim: int = 192
    speaker_dim: int = 128
    speaker_channels: tuple[int, ...] = (256, 256, 256, 256, 768)
    speaker_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    speaker_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    speaker_attention_channels: int = 64
    speaker_res2net_scale: int = 2
    speaker_se_channels: int = 64
    max_positions: int = 32768
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "head_dim", "rope_base")


def time_features(t: torch.Tensor, channels: int = 256, scale: float = 1000.0) -> torch.Tensor:
    """``(B,)`` flow times -> ``(B, channels)``: ``[sin(scale t f_i), cos(scale t f_i)]``,
    ``f_i = 10000^(-i / (channels/2 - 1))``."""
    half = channels // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(t.dtype)


class TimeEmbedding(nn.Module):
    """``(B,)`` times -> ``(B, dim)``: sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, channels: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = time_features(t, self.fc1.in_features).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(features)))


def _modulate(norm: nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return norm(x) * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """AdaLN-Zero transformer block ``(B, T, dim) -> (B, T, dim)`` conditioned on a time embedding ``(B, dim)``::

        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = modulation(silu(time))
        h = x + gate_a * attn(norm(x) * (1 + scale_a) + shift_a)
        y = h + gate_m * mlp(norm(h) * (1 + scale_m) + shift_m)

    ``look_back`` / ``look_ahead``: how many neighbouring blocks of frames its attention sees.
    """

    def __init__(self, config: DiTConfig, *, look_back: int, look_ahead: int) -> None:
        super().__init__()
        c = config
        self.look_back, self.look_ahead = look_back, look_ahead
        self.modulation = nn.Linear(c.dim, 6 * c.dim)
        self.norm = LayerNorm(c.dim, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(c.dim, c.num_heads, head_dim=c.head_dim, qkv_bias=True, out_bias=True,
                              backend=c.backend, rope_heads=1, rope_interleaved=True)
        self.mlp = GeluMLP(c.dim, c.ff_mult * c.dim, approximate="tanh")

    def forward(self, x: torch.Tensor, time: torch.Tensor, *, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(F.silu(time)).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.attn(_modulate(self.norm, x, shift_a, scale_a), rope=rope,
                                            attention_mask=mask)
        return x + gate_m[:, None] * self.mlp(_modulate(self.norm, x, shift_m, scale_m))


class Token2WavDiT(nn.Module):
    """The flow-matching mel generator: :meth:`sample` gives ``(B, F * repeats, mel_dim)`` mels from
    ``(B, F)`` codes; :meth:`velocity` is one evaluation of the model."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.time = TimeEmbedding(c.dim)
        self.code_embed = nn.Embedding(c.num_embeds + 1, c.emb_dim)
        self.speaker_encoder = SpeakerEncoder(
            c.mel_dim, c.speaker_dim, channels=c.speaker_channels, kernel_sizes=c.speaker_kernel_sizes,
            dilations=c.speaker_dilations, attention_channels=c.speaker_attention_channels,
            res2net_scale=c.speaker_res2net_scale, se_channels=c.speaker_se_channels,
        )
        self.input_proj = nn.Linear(c.mel_dim + c.speaker_dim + c.emb_dim + c.xvector_dim, c.dim)
        self.rotary = RotaryEmbedding(c.head_dim, c.rope_base)
        self.blocks = nn.ModuleList(
            DiTBlock(c, look_back=int(i in c.look_backward_layers), look_ahead=int(i in c.look_ahead_layers))
            for i in range(c.depth)
        )
        self.out_modulation = nn.Linear(c.dim, 2 * c.dim)
        self.out_norm = LayerNorm(c.dim, eps=1e-6, elementwise_affine=False)
        self.proj_out = nn.Linear(c.dim, c.mel_dim)

    def check_codes(self, codes: torch.Tensor) -> None:
        """``codes (B, F)`` integer ids in ``[0, num_embeds]``, ``1 <= F``, ``F * repeats <= max_positions``."""
        c = self.config
        check_tensor(codes, "codes", ndim=2, floating=False)
        if not codes.shape[1] or codes.shape[1] * c.repeats > c.max_positions:
            raise OmnikitValueError(f"`codes` expected 1 to {c.max_positions // c.repeats} frames "
                                    f"(max_positions {c.max_positions}) but got {codes.shape[1]}")
        check_ids(codes, "codes", c.num_embeds + 1, what="ids")

    def condition(self, codes: torch.Tensor, conditioning: torch.Tensor, reference_mel: torch.Tensor,
                  guidance: bool) -> torch.Tensor:
        """The input projection of everything but ``x`` (bias included): ``(B', F * repeats, dim)``, ``B' = 2B``
        with guidance (the conditioned items, then the unconditioned ones)."""
        c = self.config
        frames = codes.shape[1] * c.repeats
        if guidance:
            codes = torch.cat([codes, torch.zeros_like(codes)])
            conditioning = torch.cat([conditioning, torch.zeros_like(conditioning)])
            reference_mel = torch.cat([reference_mel, torch.zeros_like(reference_mel)])
        voice = self.speaker_encoder(reference_mel)[:, None].expand(-1, frames, -1)
        code = self.code_embed(codes).repeat_interleave(c.repeats, dim=1)
        xvector = conditioning[:, None].expand(-1, frames, -1)
        weight = self.input_proj.weight[:, c.mel_dim:]
        return F.linear(torch.cat([voice, code, xvector], dim=-1), weight, self.input_proj.bias)

    def masks(self, frames: int, lengths: torch.Tensor | None,
              device: torch.device) -> dict[tuple[int, int], torch.Tensor]:
        """Per ``(look_back, look_ahead)``: the bool mask ``(B or 1, 1, T, T)`` of the block pattern (and
        the valid keys when ``lengths`` (B,) mel frames are given)."""
        block = torch.arange(frames, device=device) // self.config.block_size
        diff = block[None, :] - block[:, None]  # key block - query block
        keys = None if lengths is None else lengths_to_mask(lengths, frames)[:, None, None, :]
        masks = {}
        for b in self.blocks:
            key = (b.look_back, b.look_ahead)
            if key not in masks:
                mask = ((diff >= -b.look_back) & (diff <= b.look_ahead))[None, None]
                masks[key] = mask if keys is None else mask & keys
        return masks

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 masks: dict[tuple[int, int], torch.Tensor], valid: torch.Tensor | None = None) -> torch.Tensor:
        """One model evaluation: ``x (B', T, mel_dim)``, times ``t (B',)``, ``cond`` from :meth:`condition`,
        ``masks`` from :meth:`masks`, ``valid`` ``(B', T, 1)`` bool (padded frames are zeroed, so whatever they
        hold, NaN included, never reaches a valid one) -> velocity ``(B', T, mel_dim)``."""
        c = self.config
        h = F.linear(x, self.input_proj.weight[:, : c.mel_dim]) + cond
        if valid is not None:
            h = h.masked_fill(~valid, 0)
        time = self.time(t)
        rope = self.rotary(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h, time, rope=rope, mask=masks[(block.look_back, block.look_ahead)])
        scale, shift = self.out_modulation(F.silu(time)).chunk(2, dim=-1)
        return self.proj_out(_modulate(self.out_norm, h, shift, scale))

    def sample(self, codes: torch.Tensor, conditioning: torch.Tensor, reference_mel: torch.Tensor,
               noise: torch.Tensor, *, steps: int = 10, guidance_scale: float = 0.5, sway: float | None = -1.0,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Integrate from ``noise`` to a mel spectrogram.

        Args:
            codes: ``(B, F)`` int codes.
            conditioning: ``(B, xvector_dim)`` speaker x-vectors.
            reference_mel: ``(B, T_ref, mel_dim)`` the voice's reference mel.
            noise: ``(B, F * repeats, mel_dim)`` the initial sample.
            steps: time points (``steps - 1`` solver steps of four evaluations each).
            guidance_scale: classifier-free guidance strength (below 1e-5: no guidance, one pass).
            sway: the time schedule's sway coefficient (None: even times).
            lengths: ``(B,)`` valid mel frames per item (padded frames are never attended to).

        Returns:
            ``(B, F * repeats, mel_dim)`` log-magnitude mels.
        """
        guidance = guidance_scale >= 1e-5
        batch = codes.shape[0]
        cond = self.condition(codes, conditioning, reference_mel, guidance)
        if lengths is not None and guidance:
            lengths = torch.cat([lengths, lengths])
        masks = self.masks(noise.shape[1], lengths, noise.device)
        valid = None if lengths is None else lengths_to_mask(lengths, noise.shape[1])[..., None]

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            if not guidance:
                return self.velocity(x, t.expand(batch), cond, masks, valid)
            both = self.velocity(torch.cat([x, x]), t.expand(2 * batch), cond, masks, valid)
            conditioned, unconditioned = both[:batch], both[batch:]
            return conditioned + (conditioned - unconditioned) * guidance_scale

        return rk4_integrate(velocity, noise, sway_times(steps, sway, device=noise.device, dtype=noise.dtype))
