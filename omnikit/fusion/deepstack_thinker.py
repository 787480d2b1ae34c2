"""A Thinker that adds "deepstack" visual features into its first layers (Qwen3-VL / Qwen3-Omni).

The vision tower gives, besides the merged tokens scattered at the image/video placeholders, one
extra feature per visual token for each of its deepstack mergers. After decoder layer ``k`` the
``k``-th of them is added to the hidden state of every visual placeholder (image and video
tokens, in order of appearance). The features travel with the media: a ``media`` value that is
a :class:`~omnikit.vision.DeepstackOutput` carries them (``.deepstack``), so generation, which
passes the media with the prompt only, needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from omnikit.fusion.boundary import CheckedMedia
from omnikit.fusion.early import MediaInput, place_media, placed_tokens
from omnikit.fusion.thinker import Thinker
from omnikit.layers.decoder import run_blocks
from omnikit.layers.masks import positions_from_cu_seqlens
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["DeepstackThinker"]

_VISUAL = ("image", "video")


class DeepstackThinker(Thinker):
    """:class:`Thinker` whose ``forward`` adds the deepstack features of ``media["image"]`` /
    ``media["video"]`` (``DeepstackOutput`` values) after its first layers. ``(B, T) -> (B, T, vocab)``."""

    def _deepstack(self, media: CheckedMedia, like: torch.Tensor) -> list[torch.Tensor]:
        """One ``(B, T, dim)`` tensor per deepstack level: the features at the visual placeholders, zeros elsewhere.
        ``media`` was checked against the placeholders (the deepstack features share the merged tokens' counts)."""
        levels: list[torch.Tensor] = []
        for modality in _VISUAL:
            value = media.get(modality)
            features = getattr(value, "deepstack", None)
            if not features:
                continue
            mask = media.slots[modality]
            if len(features) > len(self.decoder.blocks):
                raise OmnikitValueError(
                    f"`media[{modality!r}]` has {len(features)} deepstack levels but the decoder only "
                    f"{len(self.decoder.blocks)} layers"
                )
            for level, feature in enumerate(features):
                if level == len(levels):
                    levels.append(torch.zeros_like(like))
                tokens = placed_tokens(EncoderOutput(feature, value.lengths), mask).to(like.dtype)
                levels[level] = torch.where(mask[..., None], tokens, levels[level])
        return levels

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        media: Mapping[str, MediaInput] | None = None,
        positions: torch.Tensor | None = None,
        return_hidden: bool = False,
        logits_to_keep: int = 0,
        **attention: torch.Tensor | None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Thinker.forward` (``attention``: ``key_padding_mask``, ``attention_mask``, ``cu_seqlens``),
        with the deepstack features of visual ``media`` added."""
        if self.bidirectional_media:
            raise OmnikitValueError("DeepstackThinker does not support bidirectional_media")
        unknown = sorted(set(attention) - {"key_padding_mask", "attention_mask", "cu_seqlens"})
        if unknown:
            raise OmnikitTypeError(f"DeepstackThinker.forward got unexpected keyword arguments {unknown}")
        checked = self.prompt_media(input_ids, media, attention.get("key_padding_mask"))
        x = place_media(self.embed(input_ids), checked, checked.slots)
        levels = self._deepstack(checked, x)
        decoder, cu_seqlens = self.decoder, attention.get("cu_seqlens")
        if positions is None and cu_seqlens is not None:
            positions = positions_from_cu_seqlens(cu_seqlens, input_ids.shape[1])
        elif positions is None:
            positions = torch.arange(input_ids.shape[1], device=x.device) + decoder.cache_length
        kwargs = {"rope": decoder.rotary(positions), **attention}
        checkpointing = decoder.gradient_checkpointing and self.training
        blocks = list(decoder.blocks)
        for level, feature in enumerate(levels):
            x, _ = run_blocks(blocks[level : level + 1], x, lambda b: kwargs, checkpointing=checkpointing,
                              return_aux=False)
            x = x + feature
        x, _ = run_blocks(blocks[len(levels):], x, lambda b: kwargs, checkpointing=checkpointing, return_aux=False)
        hidden = decoder.norm(x)
        logits = self.lm_head(self.kept_for_logits(hidden, logits_to_keep))
        return (logits, hidden) if return_hidden else logits
