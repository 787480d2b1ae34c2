"""Output containers shared by encoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch

from omnikit.layers.masks import lengths_to_mask

__all__ = ["EncoderOutput", "traceable_output"]

T = TypeVar("T")


def traceable_output(cls: type[T]) -> type[T]:
    """Register an output dataclass as a pytree node, so ``torch.export`` programs can return it
    (``torch.compile`` needs nothing). Apply above ``@dataclass``."""
    torch.export.register_dataclass(cls, serialized_type_name=f"{cls.__module__}.{cls.__qualname__}")
    return cls


@traceable_output
@dataclass
class EncoderOutput:
    """What every encoder (audio, frame, temporal) returns.

    Attributes:
        hidden_states: ``(B, T', D)`` features, padded positions zeroed.
        lengths: ``(B,)`` int64, the number of valid positions of each item.
    """

    hidden_states: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(B, T')`` bool, True on valid positions."""
        return lengths_to_mask(self.lengths, self.hidden_states.shape[1])

    def unpad(self) -> list[torch.Tensor]:
        """One ``(T'_b, D)`` tensor per item, padding removed."""
        return [h[: int(n)] for h, n in zip(self.hidden_states, self.lengths)]
