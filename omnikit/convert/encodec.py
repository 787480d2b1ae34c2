"""``encodec.EncodecModel`` -> :class:`omnikit.audio.encodec_codec.EncodecTokenizer` (same codes, same audio)."""

from __future__ import annotations

from torch import nn

from omnikit.audio.encodec_codec import EncodecTokenizer

__all__ = ["from_encodec"]


def from_encodec(model: nn.Module, bandwidth: float | None = None) -> EncodecTokenizer:
    """Wrap ``model`` (weights shared, not copied) with the omnikit codec interface.

    ``bandwidth`` (kbps) picks the number of codebooks; by default the model's own target
    bandwidth, or 6 kbps (8 codebooks at 24 kHz) when it has none.
    """
    return EncodecTokenizer(model, bandwidth)
