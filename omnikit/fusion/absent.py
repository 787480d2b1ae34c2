"""Dummy media for encoders whose modality is absent from a batch.

Data-parallel training shards encoders like any other module: a rank whose batch has no audio
would skip the audio encoder's all-gathers and reduce-scatters, and the ranks' collectives would
no longer match. Models with a ``run_absent_media`` switch (set by
:func:`omnikit.distributed.parallelize`) instead run such an encoder on :func:`absent_media_inputs`
at the point where a present one would run, and add its output times zero to their result, so the
loss is unchanged and the encoder's gradient on that rank is exactly zero.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["absent_media_inputs", "example_media", "zero_of"]


def example_media(
    video: nn.Module | None, audio: nn.Module | None, batch: int, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Small random media for ``batch`` items of the adapters given: ``frames``
    ``(batch, tubelet, C, 2p, 2p)`` (one tubelet step of 2x2 patches; tubelet video encoders only),
    ``audio_features`` ``(batch, n_mels, 8)`` and ``audio_lengths`` (all 8)."""
    example = {}
    if video is not None and hasattr(video.encoder, "tubelet"):
        enc = video.encoder
        example["frames"] = torch.randn(batch, enc.tubelet, enc.in_channels, 2 * enc.patch, 2 * enc.patch,
                                        generator=generator)
    if audio is not None:
        example["audio_features"] = torch.randn(batch, audio.encoder.config.n_mels, 8, generator=generator)
        example["audio_lengths"] = torch.full((batch,), 8)
    return example


def absent_media_inputs(
    video: nn.Module | None, audio: nn.Module | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """One small item per modality: the encoder's own contract inputs (one video frame, eight mel
    frames) where it declares them, else :func:`example_media`; made with fixed generators, so the
    global RNG is left alone."""
    example = example_media(video, audio, 1, generator=torch.Generator().manual_seed(0))
    if hasattr(getattr(video, "encoder", None), "contract_inputs"):
        example["frames"] = video.encoder.contract_inputs([1]).kwargs["frames"]
    if hasattr(getattr(audio, "encoder", None), "contract_inputs"):
        example["audio_features"] = audio.encoder.contract_inputs([8]).kwargs["features"]
        example["audio_lengths"] = torch.full((1,), example["audio_features"].shape[-1])
    return {k: v.to(device) for k, v in example.items()}


def zero_of(outputs: list[torch.Tensor]) -> torch.Tensor | None:
    """``()`` zero that depends on every tensor of ``outputs`` (None when there are none)."""
    return sum(t.sum() for t in outputs) * 0 if outputs else None
