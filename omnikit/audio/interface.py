"""The codec interface every omnikit codec implements, as runtime-checkable protocols.

- :class:`CodeDecoder`: ``decode(codes (B, K, F) int64) -> wav (B, C, S)`` with ``sample_rate``,
  ``frame_rate`` (frames per second), ``num_codebooks`` (K) and ``codebook_size``: what a Talker's
  codes are turned into audio with (Qwen3-Omni's Code2Wav is one);
- :class:`Codec`: a :class:`CodeDecoder` that also ``encode`` s ``wav (B, C, S) -> codes (B, K, F)``
  (SEANet/RVQ codecs, Mimi, the EnCodec wrapper).

``isinstance(obj, Codec)`` checks that the members exist; :func:`check_codec` raises ``TypeError``
naming the missing ones.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from omnikit.utils.checks import OmnikitTypeError

__all__ = ["CODEC_MEMBERS", "CODE_DECODER_MEMBERS", "CodeDecoder", "Codec", "check_codec"]

CODE_DECODER_MEMBERS = ("decode", "sample_rate", "frame_rate", "num_codebooks", "codebook_size")
CODEC_MEMBERS = ("encode", *CODE_DECODER_MEMBERS)


@runtime_checkable
class CodeDecoder(Protocol):
    """Turns ``codes (B, num_codebooks, F)`` (values in ``[0, codebook_size)``) into audio at ``sample_rate``."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_rate(self) -> float: ...

    @property
    def num_codebooks(self) -> int: ...

    @property
    def codebook_size(self) -> int: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Codec(CodeDecoder, Protocol):
    """A :class:`CodeDecoder` with the inverse ``encode(wav (B, C, S)) -> codes (B, K, F)`` int64."""

    def encode(self, wav: torch.Tensor) -> torch.Tensor: ...


def check_codec(codec: object, name: str, *, encodes: bool = True) -> None:
    """Raise ``TypeError`` naming ``name`` and the members of the codec interface ``codec`` lacks
    (``encodes=False``: only the :class:`CodeDecoder` part is needed)."""
    members = CODEC_MEMBERS if encodes else CODE_DECODER_MEMBERS
    missing = [m for m in members if not hasattr(codec, m)]
    if missing:
        kind = "Codec" if encodes else "CodeDecoder"
        raise OmnikitTypeError(f"`{name}` expected a {kind} (omnikit.audio.interface) but "
                               f"{type(codec).__name__} lacks {missing}")
