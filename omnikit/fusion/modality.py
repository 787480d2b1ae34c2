"""Modality codes and the placeholder tokens that stand for media inside a text sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["MEDIA_MODALITIES", "MODALITIES", "MediaTokens"]

#: Modality codes used in ``modality_ids`` tensors: ``MODALITIES.index(name)``.
MODALITIES: tuple[str, ...] = ("text", "image", "video", "audio")
#: The modalities that enter a sequence through placeholder tokens.
MEDIA_MODALITIES: tuple[str, ...] = MODALITIES[1:]


@dataclass(frozen=True)
class MediaTokens:
    """The placeholder token id of each media modality (``None``: the modality is not used).

    One placeholder token stands for one encoder output token, so an image of 12 merged patches
    occupies 12 ``image`` placeholders in ``input_ids``.
    """

    image: int | None = None
    video: int | None = None
    audio: int | None = None

    def __post_init__(self) -> None:
        used = [v for v in self.as_dict().values()]
        if len(set(used)) != len(used):
            raise OmnikitValueError(f"`MediaTokens` expected distinct placeholder ids but got {self.as_dict()}")

    def as_dict(self) -> dict[str, int]:
        """``{modality: placeholder id}`` of the modalities in use."""
        return {m: getattr(self, m) for m in MEDIA_MODALITIES if getattr(self, m) is not None}

    def modality_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids (..., T)`` int -> modality code of every token, same shape, int64 (0 = text)."""
        check_tensor(input_ids, "input_ids", ndim=(1, 2), floating=False)
        return self.codes(input_ids)

    def codes(self, input_ids: torch.Tensor) -> torch.Tensor:
        """:meth:`modality_ids` of ids checked already (by :func:`~omnikit.fusion.boundary.check_prompt`)."""
        codes = torch.zeros_like(input_ids, dtype=torch.long)
        for name, token in self.as_dict().items():
            codes[input_ids == token] = MODALITIES.index(name)
        return codes
