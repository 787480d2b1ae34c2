"""The towers of a published Thinker seen as media adapters keyed by modality.

:class:`~omnikit.fusion.OmniThinker` keeps its towers under their published names (``audio_encoder``,
``vision_encoder``: the checkpoints' keys), and encodes through the same adapter loop as the tiny early-fusion
models (:func:`~omnikit.fusion.absent.encode_media`, absent towers included). These thin views (plain
objects, no parameters of their own) give the towers the adapter calling convention:
``adapter(value, lengths) -> AdaptedMedia`` and ``fixed_example()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from omnikit.fusion.adapters import AdaptedMedia
from omnikit.outputs import EncoderOutput
from omnikit.vision.patch_grids import Grid

__all__ = ["AudioTowerAdapter", "VisionTowerAdapter"]


class AudioTowerAdapter:
    """``features (N, n_mels, L)``, ``lengths (N,)`` -> the audio tower's padded :class:`EncoderOutput`, its token
    counts ``(N,)`` as the items (a tensor: never read on the host)."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    def fixed_example(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eight mel frames: the tower's own contract input (lengths None: all valid)."""
        features, *lengths = self.encoder.contract_inputs([8]).kwargs.values()
        return features, (lengths or [None])[0]

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor | None) -> AdaptedMedia:
        out = self.encoder(features, lengths)
        return AdaptedMedia(out, out.lengths)


class VisionTowerAdapter:
    """Pixel rows ``(N, C * t * p * p)`` and their ``(t, h, w)`` patch grids -> the vision tower's merged tokens
    (``(N / m^2, D)``, or one :class:`EncoderOutput` item with deepstack features), the grids as the items.

    Args:
        encode: ``(pixels, grids) -> tokens``: the Thinker's call of its vision tower.
        config: the tower's config (``merge_size``, ``in_chans``, ``patch``).
    """

    def __init__(self, encode: Callable[[torch.Tensor, Sequence[Grid]], torch.Tensor | EncoderOutput],
                 config: object) -> None:
        self.encode, self.config = encode, config

    def fixed_example(self) -> tuple[torch.Tensor, list[Grid]]:
        """One zero ``m x m`` patch step."""
        c, m = self.config, self.config.merge_size
        return torch.zeros(m**2, c.in_chans * math.prod(c.patch)), [(1, m, m)]

    def __call__(self, pixels: torch.Tensor, grids: Sequence[Grid]) -> AdaptedMedia:
        return AdaptedMedia(self.encode(pixels, grids), list(grids))
