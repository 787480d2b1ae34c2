"""wav2vec 2.0 / HuBERT-style audio encoder on raw waveforms: conv feature encoder + transformer.

    wav (B, S) -> ConvFeatureEncoder (7 convs, 20 ms hop, LayerNorm + Linear to dim)    (B, T', dim)
               -> + positional conv embedding (weight-normed grouped conv, kernel 128, GELU)
               -> transformer encoder                                               = (B, T', dim)

Two published layouts (transformers' ``Wav2Vec2Config`` flags in brackets):

- base (``feat_extract_norm="group"``, ``do_stable_layer_norm=False``): GroupNorm after the first
  conv; a LayerNorm after the positional embedding, then post-LN blocks
  (``h = norm1(x + attn(x))``, ``y = norm2(h + mlp(h))``).
- large-lv60 (``"layer"``, ``True``): LayerNorm after every conv; pre-LN blocks and a final LayerNorm.

Padding. Without ``lengths`` nothing is masked: the batch is coded as given, zero padding included,
which is how the base checkpoints were trained and how their feature extractor feeds them (it returns
no attention mask). With ``lengths`` (transformers' ``attention_mask``), frames past each item's
valid frames are zeroed before the positional conv and masked out of attention, and outputs past
them are zero. The GroupNorm of the base layout then normalises over the valid frames only
(``mask_group_norm=True``, the default: a padded batch equals its items run alone), or over the
whole padded clip as transformers does (``mask_group_norm=False``, what :func:`omnikit.convert.load_hf`
sets, so loaded models reproduce transformers with ``attention_mask``). The layer-norm layout is
padding-invisible either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import EncoderStack
from omnikit.audio.signal import check_waveform
from omnikit.audio.wav2vec import ConvFeatureEncoder, ConvFeatureEncoderConfig
from omnikit.layers import LayerNorm, lengths_to_mask
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field

__all__ = ["Wav2Vec2Config", "Wav2Vec2Encoder", "Wav2Vec2PositionalConv"]


@flat_keywords
@dataclass
class Wav2Vec2Config(NestedConfig):
    """Hyper-parameters of :class:`Wav2Vec2Encoder` (defaults: ``facebook/wav2vec2-base``).

    Attributes:
        conv_channels, conv_kernels, conv_strides, conv_bias, feat_norm: the conv feature encoder
            (conv_dim, conv_kernel, conv_stride, conv_bias, feat_extract_norm).
        dim, depth, num_heads, mlp_hidden: the transformer (hidden_size, num_hidden_layers,
            num_attention_heads, intermediate_size).
        pos_kernel, pos_groups: the positional conv (num_conv_pos_embeddings, num_conv_pos_embedding_groups).
        stable_layer_norm: pre-LN blocks and a final norm (do_stable_layer_norm); else post-LN.
        norm_eps: epsilon of the transformer's and the projection's LayerNorms (layer_norm_eps).
        mask_group_norm: with ``lengths``, the base layout's GroupNorm sees only valid frames.
    """

    conv_channels: tuple[int, ...] = (512,) * 7
    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_norm: str = "group"
    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=768, depth=12, num_heads=12, mlp_hidden=3072, norm_eps=1e-5)
    pos_kernel: int = 128
    pos_groups: int = 16
    stable_layer_norm: bool = False
    mask_group_norm: bool = True
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps")


class Wav2Vec2PositionalConv(nn.Module):
    """Relative positions as a grouped conv over time: ``(B, T, D) -> (B, T, D)``, ``gelu(conv(x))``.

    The kernel is weight-normalised per tap (``weight = g * v / |v|`` with ``|v|`` over the channels,
    ``g (1, 1, kernel)``); an even kernel's extra last output step is dropped.
    """

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2)


class Wav2Vec2Encoder(nn.Module):
    """Raw waveform ``(B, S)`` (or ``(B, 1, S)``), ``lengths (B,)`` valid samples -> :class:`EncoderOutput`
    ``(B, T', dim)`` with ``T' = conv frames`` and the valid frames per item.

    Weights: ``features`` (a :class:`ConvFeatureEncoder`), ``pos_conv``, ``norm``, ``layers.blocks.{i}``.
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.features = ConvFeatureEncoder(ConvFeatureEncoderConfig(
            channels=config.conv_channels, kernels=config.conv_kernels, strides=config.conv_strides,
            conv_bias=config.conv_bias, norm=config.feat_norm, dim=config.dim, norm_eps=config.norm_eps,
        ))
        self.pos_conv = Wav2Vec2PositionalConv(config.dim, config.pos_kernel, config.pos_groups)
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = EncoderStack(config.dim, config.depth, config.num_heads, config.mlp_hidden,
                                   norm_eps=config.norm_eps, backend=config.backend,
                                   post_norm=not config.stable_layer_norm)

    @property
    def output_dim(self) -> int:
        return self.config.dim

    @property
    def hop(self) -> int:
        """Input samples per output frame (320 = 20 ms at 16 kHz)."""
        return self.features.hop

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per item: the conv arithmetic ``L -> (L - k) // s + 1`` of every layer."""
        return self.features.output_lengths(lengths)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        x, n = check_waveform(wav, lengths, channels=1)
        if not torch.compiler.is_compiling() and x.shape[-1] < self.features.receptive_field:
            raise OmnikitValueError(f"`wav` expected at least {self.features.receptive_field} samples (one frame) but "
                                    f"got shape {tuple(wav.shape)}")
        masked = lengths is not None
        exact_stats = masked and (self.config.mask_group_norm or self.config.feat_norm == "layer")
        h = self.features(x, n if exact_stats else None).hidden_states
        frames = self.output_lengths(n)
        valid = lengths_to_mask(frames, h.shape[1]) if masked else None
        if valid is not None:
            h = h.masked_fill(~valid[..., None], 0)
        h = h + self.pos_conv(h)
        if not self.config.stable_layer_norm:
            h = self.norm(h)
        h = self.layers(h, key_padding_mask=valid)
        if self.config.stable_layer_norm:
            h = self.norm(h)
        if valid is not None:
            h = h.masked_fill(~valid[..., None], 0)
        return EncoderOutput(h, frames)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Waveforms ``(B, S)`` of ``lengths[b]`` frames' worth of samples (``receptive field + (n - 1) * hop``)."""
        field = self.features.receptive_field
        samples = torch.tensor([field + (n - 1) * self.hop for n in lengths])
        g = torch.Generator().manual_seed(seed)
        wav = torch.randn(len(lengths), int(samples.max()), generator=g)
        wav = wav.masked_fill(~lengths_to_mask(samples, wav.shape[1]), 0)
        ragged = bool((samples != samples.max()).any())
        kwargs: dict[str, torch.Tensor] = {"wav": wav, **({"lengths": samples} if ragged else {})}
        return ContractInputs(kwargs, samples, {"wav": 1}, "lengths" if ragged else None)
