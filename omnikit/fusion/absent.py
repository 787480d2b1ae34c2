"""The one media-encoding loop of the fusion models (:func:`encode_media`), and dummy media for encoders whose
modality is absent from a batch.

Data-parallel training shards encoders like any other module: a rank whose batch has no audio
would skip the audio encoder's all-gathers and reduce-scatters, and the ranks' collectives would
no longer match. Models with a ``run_absent_media`` switch (set by
:func:`omnikit.distributed.parallelize`) instead run such an encoder on :func:`absent_media_inputs`
at the point where a present one would run, and add its output times zero to their result, so the
loss is unchanged and the encoder's gradient on that rank is exactly zero. :func:`encode_media` does both for
``EarlyFusionOmni``, ``CrossAttentionOmni`` and the published Thinkers (their towers seen as adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from omnikit.fusion.adapters import AdaptedMedia
from omnikit.fusion.media import MEDIA_KEYWORDS, ModalityInput
from omnikit.outputs import EncoderOutput

__all__ = ["absent_media_inputs", "adapted_tensors", "encode_media", "example_media", "zero_of"]

#: A media adapter: ``adapter(value, lengths) -> AdaptedMedia`` with ``fixed_example() -> (value, lengths)``.
Adapter = Any
Encoded = TypeVar("Encoded")


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
    adapters: Mapping[str, Adapter], device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``{modality: (media, lengths)}``: one small item per adapter, its ``fixed_example()`` (the
    encoder's own contract input where it declares one), so the global RNG is left alone."""
    inputs = {}
    for modality, adapter in adapters.items():
        media, lengths = adapter.fixed_example()
        inputs[modality] = (media.to(device), lengths.to(device) if isinstance(lengths, torch.Tensor) else lengths)
    return inputs


def adapted_tensors(adapted: AdaptedMedia) -> list[torch.Tensor]:
    """The tensors of an adapter's output (tokens, deepstack features) that an absent run must join the graph."""
    media = adapted.media
    if isinstance(media, EncoderOutput):
        return [media.hidden_states, *getattr(media, "deepstack", ())]
    return [media]


def encode_media(
    adapters: Mapping[str, Adapter],
    given: Mapping[str, ModalityInput],
    *,
    run_absent: bool,
    device: torch.device,
    encode: Callable[[Adapter, torch.Tensor, Any], Encoded] = lambda adapter, value, lengths: adapter(value, lengths),
    tensors: Callable[[Encoded], list[torch.Tensor]] = adapted_tensors,
) -> tuple[dict[str, Encoded], torch.Tensor | None]:
    """The one media-encoding loop of the fusion models: each adapter, in order, on its media of ``given``, or,
    when its modality is absent and ``run_absent`` is on, on its ``fixed_example()`` (on ``device``) at the
    point where it would run.

    Args:
        adapters: ``{modality: adapter}``; an adapter is called ``adapter(value, lengths)`` (``lengths``: the
            item sizes, valid steps ``(N,)`` or patch grids) and has ``fixed_example() -> (value, lengths)``.
        given: the call's checked media.
        encode: what runs an adapter (default: the call); ``tensors``: the tensors of its result.

    Returns:
        ``{modality: encode(...)}`` of the given media, and the ``()`` zero of the absent runs' tensors
        (:func:`zero_of`; None without any), to add to the model's output.
    """
    encoded: dict[str, Encoded] = {}
    absent: list[torch.Tensor] = []
    dummy = absent_media_inputs(adapters, device) if run_absent else {}
    for modality, adapter in adapters.items():
        if modality in given:
            encoded[modality] = encode(adapter, given[modality].value, given[modality].lengths)
        elif modality in dummy:
            absent += tensors(encode(adapter, *dummy[modality]))
    return encoded, zero_of(absent)


def zero_of(outputs: list[torch.Tensor]) -> torch.Tensor | None:
    """``()`` zero that depends on every tensor of ``outputs`` (None when there are none)."""
    return sum(t.sum() for t in outputs) * 0 if outputs else None
