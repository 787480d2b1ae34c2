"""Gemma 4's whole model: the language model reading image and audio soft tokens at their placeholders.

``input_ids`` carry one ``image_token_id`` per image soft token and one ``audio_token_id`` per
audio soft token; the towers' valid tokens, in batch order, replace them (their count must match).
Placeholders embed as the padding token for the per-layer embeddings. With
``bidirectional_vision`` (``use_bidirectional_attention="vision"``), the tokens of one image see
each other both ways on sliding layers (still within the window); full layers stay causal.
With a ``key_padding_mask``, placeholder ids in the padding are padding, not slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from omnikit.audio.gemma4 import Gemma4AudioEncoder
from omnikit.fusion.early import media_slots, place_media
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni_prompt import pad_rows
from omnikit.models.gemma4 import Gemma4LM
from omnikit.models.language_model import TokenLM
from omnikit.outputs import EncoderOutput
from omnikit.streaming import StreamingContainer
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.parallel import ParallelPlan
from omnikit.vision.gemma4 import Gemma4VisionEncoder

__all__ = ["Gemma4Omni", "vision_blocks"]


def vision_blocks(is_image: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool -> ``(B, T)`` int: the index of each run of image tokens, -1 elsewhere."""
    starts = is_image & ~torch.cat((torch.zeros_like(is_image[:, :1]), is_image[:, :-1]), dim=1)
    return torch.where(is_image, starts.long().cumsum(dim=1) - 1, -1)


class Gemma4Omni(TokenLM, StreamingContainer, nn.Module):
    """``input_ids (B, T)`` with media placeholders (+ images, audio) -> logits ``(B, T, vocab)``.

    Submodules: ``lm`` (:class:`Gemma4LM`), ``vision`` (:class:`Gemma4VisionEncoder`), ``audio``
    (:class:`Gemma4AudioEncoder`), each tower with its embedder into the text width.
    """

    # It streams (KV-cached ``generate``), but the contract's chunked checks cut the ids apart from
    # the media they stand for; the language model alone runs them (``gemma4_tiny``).
    supports_streaming = False

    def __init__(
        self,
        lm: Gemma4LM,
        vision: Gemma4VisionEncoder | None = None,
        audio: Gemma4AudioEncoder | None = None,
        *,
        image_token_id: int,
        audio_token_id: int,
        video_token_id: int | None = None,
        pad_token_id: int = 0,
        bidirectional_vision: bool = False,
    ) -> None:
        super().__init__()
        self.lm, self.vision, self.audio = lm, vision, audio
        for tower, name in ((vision, "vision"), (audio, "audio")):
            if tower is not None and tower.output_dim != lm.config.dim:
                raise OmnikitValueError(f"`{name}` expected soft tokens of width {lm.config.dim} but gives "
                                        f"{tower.output_dim} (set its text_dim)")
        self.image_token_id, self.audio_token_id, self.pad_token_id = image_token_id, audio_token_id, pad_token_id
        self.video_token_id = video_token_id
        self.bidirectional_vision = bidirectional_vision

    @property
    def config(self) -> Any:  # the language model's (vocab_size for generation)
        return self.lm.config

    @property
    def embed(self) -> nn.Embedding:
        return self.lm.embed

    def parallel_plan(self) -> ParallelPlan:
        """The towers are FSDP units (the language model brings its own plan)."""
        return ParallelPlan(fsdp_units=[m for m in (self.vision, self.audio) if m is not None])

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        pixel_values: torch.Tensor | None = None,
        image_positions: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        input_ids: ``(B, T)`` with placeholders.
        pixel_values, image_positions: images for :class:`Gemma4VisionEncoder` (``(I, N, 3 p^2)``, ``(I, N, 2)``).
        audio_features, audio_lengths: clips for :class:`Gemma4AudioEncoder` (``(A, mels, frames)``, ``(A,)``).
        positions, key_padding_mask, logits_to_keep: as :meth:`Gemma4LM.forward`.
        """
        self.check_ids(input_ids)
        is_image, is_audio = input_ids == self.image_token_id, input_ids == self.audio_token_id
        valid = None if key_padding_mask is None else key_padding_mask[:, -input_ids.shape[1]:]
        if valid is not None:
            is_image, is_audio = is_image & valid, is_audio & valid
        placeholders = is_image | is_audio
        if self.video_token_id is not None:  # video placeholders embed as padding too (no video tower here)
            placeholders = placeholders | (input_ids == self.video_token_id)
        text_ids = input_ids.masked_fill(placeholders, self.pad_token_id)
        media: dict[str, EncoderOutput] = {}
        if pixel_values is not None:
            if self.vision is None or image_positions is None:
                raise OmnikitValueError("`pixel_values` need a vision tower and `image_positions`")
            out = self.vision(pixel_values, image_positions)
            media["image"] = out
        if audio_features is not None:
            if self.audio is None:
                raise OmnikitValueError("`audio_features` need an audio tower")
            out = self.audio(audio_features, audio_lengths)
            media["audio"] = out
        # the one scatter of early fusion (a gather by rank: no data-dependent shapes, so it compiles whole);
        # placeholders of a modality not given, or in the padding, stay padding embeddings
        tokens = MediaTokens(**{m: getattr(self, f"{m}_token_id") for m in media})
        slots = media_slots(input_ids, media, tokens, width=self.lm.config.dim, key_padding_mask=valid)
        embeds = place_media(self.lm.embed_tokens(text_ids), media, slots)
        masks: dict[str, Any] = {}
        if self.bidirectional_vision and input_ids.shape[1] > 1:  # decode steps (one token) are causal
            masks = {"sliding_attention_mask": self._vision_mask(is_image), "sliding_causal": False}
        logits, hidden = self.lm.run(text_ids, embeds, positions=positions, key_padding_mask=key_padding_mask,
                                     logits_to_keep=logits_to_keep, **masks)
        return (logits, hidden) if return_hidden else logits

    def _vision_mask(self, is_image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, T, S)`` causal, or within one image, over the cached and the new positions."""
        cached = self.lm.decoder.cache_length
        length = is_image.shape[1]
        blocks = vision_blocks(is_image)
        query = torch.arange(cached, cached + length, device=is_image.device)
        key = torch.arange(cached + length, device=is_image.device)
        causal = key[None, :] <= query[:, None]
        key_blocks = torch.cat((blocks.new_full((blocks.shape[0], cached), -1), blocks), dim=1)
        same = (blocks[:, :, None] == key_blocks[:, None, :]) & (blocks[:, :, None] >= 0)
        return (causal[None] | same)[:, None]

    def decode_step(
        self, tokens: torch.Tensor, *, positions: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One generated text token per item (see :meth:`Gemma4LM.decode_step`)."""
        return self.lm.decode_step(tokens, positions=positions, key_padding_mask=key_padding_mask)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """A left-padded batch: item ``b`` holds ``lengths[b]`` text ids around an image of ``3 - b % 2``
        soft tokens and an audio clip of ``max(20 - 6 b, 5)`` mel frames (text only without the towers);
        ``item(b)`` packs item ``b`` alone."""
        if self.vision is None or self.audio is None:
            return self.lm.contract_inputs(lengths, seed=seed)
        images = [3 - b % 2 for b in range(len(lengths))]
        frames = [max(20 - 6 * b, 5) for b in range(len(lengths))]
        vision = self.vision.contract_inputs(images, seed=seed)
        audio = self.audio.contract_inputs(frames, seed=seed).kwargs["features"]
        tokens = self.audio.output_lengths(torch.tensor(frames)).tolist()
        g = torch.Generator().manual_seed(seed)
        specials = min(self.image_token_id, self.audio_token_id, self.video_token_id or self.config.vocab_size)
        rows = []
        for b, n in enumerate(lengths):
            text = torch.randint(1, specials, (n,), generator=g).tolist()
            head, mid = n // 3, 2 * n // 3
            rows.append(text[:head] + [self.image_token_id] * images[b] + text[head:mid]
                        + [self.audio_token_id] * tokens[b] + text[mid:])

        def pack(items: Sequence[int]) -> ContractInputs:
            ids, mask = pad_rows([rows[b] for b in items], "left", self.pad_token_id)
            if len(items) == 1:
                pictures = vision.item(items[0]).kwargs
                clips = audio[items[0]:items[0] + 1, :, : frames[items[0]]]
            else:
                pictures, clips = vision.kwargs, audio
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {"input_ids": ids, "key_padding_mask": mask.bool(), "positions": positions,
                      "pixel_values": pictures["pixel_values"], "image_positions": pictures["positions"],
                      "audio_features": clips, "audio_lengths": torch.tensor([frames[b] for b in items])}
            return ContractInputs(kwargs, mask.sum(-1), {"input_ids": 1}, "key_padding_mask",
                                  item=lambda b: pack([items[b]]), padding_side="left")

        return pack(range(len(lengths)))
