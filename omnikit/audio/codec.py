"""A trainable causal codec: SEANet encoder -> quantizer -> SEANet decoder, streaming exactly.

Codec interface (API.md)::

    codes = codec.encode(wav)          # (B, C, S) -> (B, K, S // hop) int64
    audio = codec.decode(codes)        # (B, K, F) -> (B, C, F * hop)
    codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.codebook_size

``codec(wav, lengths)`` is the training pass (encode, quantize with straight-through gradients,
decode) and returns a :class:`CodecOutput`. Inside ``with codec.streaming(B):``, ``encode`` on
successive chunks returns the codes of the frames completed so far and ``decode`` on successive
code chunks returns their audio: concatenated, both equal the offline results.

Only whole frames are coded: the last ``S % hop`` samples of a clip are dropped (pad the clip
to a multiple of ``hop`` to keep them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.audio.blocks import feature_contract_inputs
from omnikit.audio.fsq import FSQ
from omnikit.audio.quantize import ResidualVQ
from omnikit.audio.seanet import SEANetDecoder, SEANetEncoder
from omnikit.audio.signal import check_sample_rate, check_waveform
from omnikit.audio.split_rvq import SplitResidualVQ
from omnikit.layers import lengths_to_mask
from omnikit.outputs import traceable_output
from omnikit.streaming import StreamingContainer, check_stream_batch, is_streaming
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_choice, check_tensor

__all__ = ["CodecOutput", "SEANetCodec", "SEANetCodecConfig"]


@traceable_output
@dataclass
class CodecOutput:
    """What ``SEANetCodec.forward`` returns.

    Attributes:
        hidden_states: ``(B, F, channels * hop)``, the reconstruction cut into codec frames
            (frame ``f`` holds samples ``[f * hop, (f + 1) * hop)`` of every channel).
        lengths: ``(B,)`` valid frames (``lengths // hop``).
        audio: ``(B, channels, F * hop)``, the reconstruction.
        codes: ``(B, K, F)`` int64.
        loss: the quantizer's loss (commitment, codebook).
    """

    hidden_states: torch.Tensor
    lengths: torch.Tensor
    audio: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor


@dataclass
class SEANetCodecConfig:
    """Hyper-parameters of :class:`SEANetCodec` (defaults: 24 kHz, hop 320 = 75 frames/s, 8 x 1024 codes)."""

    channels: int = 1
    sample_rate: int = 24000
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    dim: int = 128
    n_residual: int = 1
    compress: int = 2
    quantizer: str = "rvq"
    num_quantizers: int = 8
    codebook_size: int = 1024
    codebook_dim: int | None = None
    num_semantic: int = 1
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    ema: bool = True
    commitment_weight: float = 1.0


class SEANetCodec(StreamingContainer, nn.Module):
    """Causal SEANet codec. Weights: ``encoder``, ``quantizer``, ``decoder``."""

    def __init__(self, config: SEANetCodecConfig) -> None:
        super().__init__()
        check_choice(config.quantizer, "quantizer", ("rvq", "split", "fsq"))
        self.config = config
        seanet = dict(n_residual=config.n_residual, compress=config.compress)
        self.encoder = SEANetEncoder(config.channels, config.dim, config.n_filters, config.ratios, **seanet)
        self.decoder = SEANetDecoder(config.channels, config.dim, config.n_filters, config.ratios, **seanet)
        vq = dict(codebook_dim=config.codebook_dim, ema=config.ema, commitment_weight=config.commitment_weight)
        if config.quantizer == "rvq":
            self.quantizer: nn.Module = ResidualVQ(config.dim, config.num_quantizers, config.codebook_size, **vq)
        elif config.quantizer == "split":
            self.quantizer = SplitResidualVQ(config.dim, config.num_quantizers, config.codebook_size,
                                             num_semantic=config.num_semantic, **vq)
        else:
            self.quantizer = FSQ(config.fsq_levels, config.dim)
        self.hop = math.prod(config.ratios)

    supports_streaming = True

    @property
    def stream_chunk(self) -> int:
        return self.hop

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Codec frames per second (``sample_rate / hop``)."""
        return self.config.sample_rate / self.hop

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def output_dim(self) -> int:
        return self.config.channels * self.hop

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Whole frames per item: ``lengths // hop``."""
        return torch.as_tensor(lengths) // self.hop

    def _latents(self, wav: torch.Tensor) -> torch.Tensor:
        x, _ = check_waveform(wav, channels=self.config.channels, like=self.encoder)
        self._check_call(x, "wav", x.shape[-1] // self.hop)
        return self.encoder(x).transpose(1, 2)  # (B, F, dim)

    def _check_call(self, x: torch.Tensor, name: str, frames: int) -> None:
        """A stream keeps its batch; offline calls need at least one whole frame."""
        if is_streaming(self):
            check_stream_batch(self, x.shape[0], name)
        elif frames < 1:
            raise OmnikitValueError(
                f"`{name}` expected at least one frame ({self.hop} samples) but got shape {tuple(x.shape)}"
            )

    def encode(self, wav: torch.Tensor, *, sample_rate: int | None = None) -> torch.Tensor:
        """``wav (B, channels, S) -> codes (B, K, S // hop)`` int64 (streams inside ``streaming``); a given
        ``sample_rate`` must be the codec's."""
        check_sample_rate(sample_rate, self.sample_rate)
        return self.quantizer.encode(self._latents(wav))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F) -> wav (B, channels, F * hop)`` (streams inside ``streaming``)."""
        check_tensor(codes, "codes", shape=("B", self.num_codebooks, "F"), floating=False)
        self._check_call(codes, "codes", codes.shape[-1])
        latents = self.quantizer.decode(codes)
        return self.decoder(latents.transpose(1, 2).to(next(self.decoder.parameters()).dtype))

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> CodecOutput:
        """Training pass: ``wav (B, channels, S)``, ``lengths (B,)`` valid samples -> :class:`CodecOutput`.

        Padded frames are excluded from codebook updates and losses.
        """
        if lengths is not None and is_streaming(self):
            raise OmnikitValueError("`lengths` cannot be given while streaming: every chunk is fully valid")
        x, n = check_waveform(wav, lengths, channels=self.config.channels, like=self.encoder)
        self._check_call(x, "wav", x.shape[-1] // self.hop)
        latents = self.encoder(x).transpose(1, 2)
        frames = torch.full_like(n, latents.shape[1]) if is_streaming(self) else self.output_lengths(n)
        mask = lengths_to_mask(frames, latents.shape[1]) if lengths is not None else None
        q = self.quantizer(latents, mask)
        audio = self.decoder(q.quantized.transpose(1, 2))
        batch, channels, samples = audio.shape
        framed = audio.view(batch, channels, samples // self.hop, self.hop).transpose(1, 2).reshape(
            batch, samples // self.hop, channels * self.hop)
        return CodecOutput(framed, frames, audio, q.codes, q.loss)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.channels, lengths, seed, name="wav", scale=0.1)
