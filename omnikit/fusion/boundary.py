"""The checked boundary of an early-fusion call: what the public entry checks once and the inner steps trust.

A call of an early-fusion model (:class:`~omnikit.fusion.EarlyFusionOmni`, :class:`~omnikit.fusion.OmniThinker`
and its subclasses, a :class:`~omnikit.fusion.Thinker` called directly) walks ``input_ids`` through media
encoding, TMRoPE ids, the placeholder scatter and the decoder. The entry checks them once:

1. :func:`check_prompt` -> :class:`CheckedPrompt`: ``input_ids`` ``(B, T)`` integer ids in the vocabulary
   (one host read), with the padding mask the entry built from its own checked argument, and their
   modality codes (no further check);
2. after encoding, :func:`check_media` -> :class:`CheckedMedia`: every modality's encoder output against its
   placeholders (types, widths and all counts in one host read), and the placeholder slots.

Both are frozen. :class:`CheckedMedia` is a read-only ``{modality: media}`` mapping, so it goes wherever a
``media`` dict goes; the Thinker trusts it (no checks, no host reads) when it is called with the very
``input_ids`` and padding mask it was checked against, and checks everything itself otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import torch

from omnikit.fusion.early import MediaInput, media_slots
from omnikit.fusion.modality import MediaTokens
from omnikit.utils.checks import check_ids

__all__ = ["CheckedMedia", "CheckedPrompt", "check_media", "check_prompt"]


@dataclass(frozen=True, eq=False)
class CheckedPrompt:
    """``input_ids`` checked at a public entry.

    Attributes:
        input_ids: ``(B, T)`` integer ids in ``[0, vocab_size)``.
        key_padding_mask: ``(B, cached + T)`` bool, False on padding, or None (built by the entry from its own
            checked argument: ``attention_mask``, ``lengths``).
        tokens: the placeholder id of each modality.
    """

    input_ids: torch.Tensor
    key_padding_mask: torch.Tensor | None
    tokens: MediaTokens

    def with_padding(self, key_padding_mask: torch.Tensor) -> CheckedPrompt:
        """The same ids with the padding mask the entry built from its checked argument."""
        return replace(self, key_padding_mask=key_padding_mask)

    @property
    def modality_ids(self) -> torch.Tensor:
        """``(B, T)`` int64 modality code of every token (0: text), from the checked ids (each step that needs
        them reads this once)."""
        return self.tokens.codes(self.input_ids)

    @property
    def valid(self) -> torch.Tensor | None:
        """``(B, T)`` bool: the padding mask's columns of these ids (None: no padding)."""
        mask = self.key_padding_mask
        return None if mask is None else mask[:, -self.input_ids.shape[1]:]


def check_prompt(
    input_ids: object, vocab_size: int, tokens: MediaTokens, key_padding_mask: torch.Tensor | None = None
) -> CheckedPrompt:
    """The one check of ``input_ids`` at an entry: a ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``
    (one host read, eager only). ``key_padding_mask``: the entry's own, already checked."""
    return CheckedPrompt(check_ids(input_ids, "input_ids", vocab_size, ndim=2), key_padding_mask, tokens)


@dataclass(frozen=True, eq=False)
class CheckedMedia(Mapping[str, MediaInput]):
    """``{modality: media}`` checked against the placeholders of :attr:`prompt` (read-only).

    Attributes:
        media: ``{modality: (N, D) tokens or EncoderOutput}`` as :func:`~omnikit.fusion.early.scatter_media`
            takes them.
        slots: ``{modality: (B, T) bool}`` where each modality's tokens go.
        prompt: the checked ids they belong to.
    """

    media: Mapping[str, MediaInput]
    slots: Mapping[str, torch.Tensor]
    prompt: CheckedPrompt

    def __getitem__(self, modality: str) -> MediaInput:
        return self.media[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(self.media)

    def __len__(self) -> int:
        return len(self.media)

    def belongs_to(self, input_ids: torch.Tensor, key_padding_mask: torch.Tensor | None) -> bool:
        """True when checked against exactly these tensors (the same objects): the callee may trust it."""
        return input_ids is self.prompt.input_ids and key_padding_mask is self.prompt.key_padding_mask


def check_media(prompt: CheckedPrompt, media: Mapping[str, MediaInput], width: int) -> CheckedMedia:
    """The one check of encoded ``media`` against the placeholders of ``prompt`` (see
    :func:`~omnikit.fusion.early.media_slots`; ``width``: the text embedding's)."""
    slots = media_slots(prompt.input_ids, media, prompt.tokens, width=width, key_padding_mask=prompt.valid)
    return CheckedMedia(dict(media), slots, prompt)
