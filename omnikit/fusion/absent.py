"""Dummy media for encoders whose modality is absent from a batch.

Data-parallel training shards encoders like any other module: a rank whose batch has no audio
would skip the audio encoder's all-gathers and reduce-scatters, and the ranks' collectives would
no longer match. Models with a ``run_absent_media`` switch (set by
:func:`omnikit.distributed.parallelize`) instead run such an encoder on :func:`absent_media_inputs`
at the point where a present one would run, and add its output times zero to their result, so the
loss is unchanged and the encoder's gradient on that rank is exactly zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from omnikit.fusion.media import MEDIA_KEYWORDS

__all__ = ["absent_media_inputs", "example_media", "zero_of"]


def example_media(
    video: nn.Module | None, audio: nn.Module | None, batch: int, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Small random media for ``batch`` items of the adapters given, as the media keywords: ``frames``
    ``(batch, tubelet, C, 2p, 2p)`` (one tubelet step of 2x2 patches; tubelet video encoders only),
    ``audio_features`` ``(batch, n_mels, 8)`` and ``audio_lengths`` (all 8); see the adapters' ``example``."""
    example = {}
    for modality, adapter in (("video", video), ("audio", audio)):
        made = None if adapter is None else adapter.example(batch, generator=generator)
        for keyword, value in zip(MEDIA_KEYWORDS[modality], made or ()):
            if keyword is not None:
                example[keyword] = value
    return example


def absent_media_inputs(
    adapters: Mapping[str, nn.Module], device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``{modality: (media, lengths)}``: one small item per adapter, its ``fixed_example()`` (the
    encoder's own contract input where it declares one), so the global RNG is left alone."""
    inputs = {}
    for modality, adapter in adapters.items():
        media, lengths = adapter.fixed_example()
        inputs[modality] = (media.to(device), None if lengths is None else lengths.to(device))
    return inputs


def zero_of(outputs: list[torch.Tensor]) -> torch.Tensor | None:
    """``()`` zero that depends on every tensor of ``outputs`` (None when there are none)."""
    return sum(t.sum() for t in outputs) * 0 if outputs else None
