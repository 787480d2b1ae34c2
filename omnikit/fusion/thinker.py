"""The Thinker: a decoder LM (dense or MoE layers, M-RoPE) that reads fused media and generates text.

``Thinker`` extends :class:`omnikit.models.CausalLM` (same weights and state-dict keys) with

- ``media``: encoder outputs scattered into the sequence at their placeholder tokens;
- optional bidirectional attention inside each media item (``bidirectional_media=True``);
- ``stream_generate`` / ``generate`` (from :class:`CausalLM`): KV-cached decoding that never samples a
  media placeholder, yielding each token with the hidden state and embedding a Talker consumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from omnikit.fusion.boundary import CheckedMedia, check_media, check_prompt
from omnikit.fusion.early import MediaInput, fusion_attention_mask, place_media
from omnikit.fusion.modality import MediaTokens
from omnikit.layers.decoder import DecoderConfig, MLPFactory
from omnikit.layers.masks import segment_ids_from_cu_seqlens
from omnikit.models.generation import GenerationOutput, GenerationStep
from omnikit.models.language_model import CausalLM
from omnikit.models.sampling import ban_tokens
from omnikit.testing import ContractInputs
from omnikit.utils.checks import check_tensor

__all__ = ["GenerationOutput", "Thinker", "ThinkerStep"]


#: The step and output of :meth:`Thinker.stream_generate` (generation lives in :mod:`omnikit.models.generation`).
ThinkerStep = GenerationStep


class Thinker(CausalLM):
    """``input_ids (B, T)`` (+ media) -> logits ``(B, T, vocab_size)``.

    Args:
        config: decoder hyper-parameters; set ``mrope_sections`` for TMRoPE positions.
        mlp_factory: per-layer MLP (a MoE layer every other block, say); see :class:`Decoder`.
        media_tokens: placeholder ids of the media this Thinker reads.
        bidirectional_media: tokens of one media item attend to each other both ways (text stays
            causal). The attention mask is then built on every call from the placeholders.
    """

    def __init__(
        self,
        config: DecoderConfig,
        mlp_factory: MLPFactory | None = None,
        *,
        media_tokens: MediaTokens | None = None,
        bidirectional_media: bool = False,
    ) -> None:
        super().__init__(config, mlp_factory)
        self.media_tokens = media_tokens or MediaTokens()
        self.bidirectional_media = bidirectional_media  # causality then comes from the mask built in forward

    def _bidirectional_mask(self, modality_ids, key_padding_mask, cu_seqlens) -> torch.Tensor:
        cached = self.decoder.cache_length
        batch, length = modality_ids.shape
        segments = None if cu_seqlens is None else segment_ids_from_cu_seqlens(cu_seqlens, length)[None]
        chunk_padding = None if key_padding_mask is None else key_padding_mask[:, cached:]
        mask = fusion_attention_mask(modality_ids, segment_ids=segments, key_padding_mask=chunk_padding)
        if cached:
            past = torch.ones(batch, 1, length, cached, dtype=torch.bool, device=mask.device)
            if key_padding_mask is not None:
                past = past & key_padding_mask[:, None, None, :cached]
            mask = torch.cat((past, mask), dim=-1)
        return mask

    def prompt_media(
        self,
        input_ids: torch.Tensor,
        media: Mapping[str, MediaInput] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> CheckedMedia:
        """``media`` as :class:`~omnikit.fusion.boundary.CheckedMedia` for ``input_ids (B, T)``: as given when it
        was checked against these very ids and mask at the public entry, else checked here (ids, mask
        ``(B, cached + T)`` bool, media against the placeholders)."""
        if isinstance(media, CheckedMedia) and media.belongs_to(input_ids, key_padding_mask):
            return media
        prompt = check_prompt(input_ids, self.config.vocab_size, self.media_tokens, key_padding_mask)
        if key_padding_mask is not None:  # (B, cached + T): checked before media scatter and masks use it
            cached = self.decoder.cache_length
            check_tensor(key_padding_mask, "key_padding_mask", shape=(input_ids.shape[0], cached + input_ids.shape[1]),
                         dtype=torch.bool)
        return check_media(prompt, media or {}, self.config.dim)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        media: Mapping[str, MediaInput] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings ``(B, T, dim)`` with media scattered in at its placeholders (see :meth:`prompt_media`)."""
        checked = self.prompt_media(input_ids, media, key_padding_mask)
        return place_media(self.embed(input_ids), checked, checked.slots)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Text-only ids: a placeholder id the draw hits becomes the id above the highest placeholder
        (media come through ``media``, which the contract does not pass)."""
        inputs = super().contract_inputs(lengths, seed=seed)
        placeholders = torch.tensor(sorted(self.media_tokens.as_dict().values()) or [-1])
        ids = inputs.kwargs["input_ids"]
        ids = torch.where(torch.isin(ids, placeholders), int(placeholders.max()) + 1, ids)
        return ContractInputs({"input_ids": ids}, inputs.lengths, inputs.time_dims)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        media: Mapping[str, MediaInput] | None = None,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        return_hidden: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        input_ids: ``(B, T)`` ids, media stood for by placeholder tokens.
        media: ``{modality: (N, D) tokens or EncoderOutput}`` (see :func:`scatter_media`).
        positions: ``(3, B, T)`` TMRoPE ids (see :func:`tmrope_position_ids`), or ``(B, T)``.
        key_padding_mask: ``(B, S)`` bool, False on padding (S includes cached positions).
        attention_mask: extra bool mask broadcastable to ``(B, H, T, S)``.
        cu_seqlens: ``(N+1,)`` boundaries of samples packed into a batch-1 row.
        return_hidden: also return the final hidden states ``(B, T, dim)``.
        logits_to_keep: logits of the last this many positions only (0: all; see :meth:`kept_for_logits`).
        """
        checked = self.prompt_media(input_ids, media, key_padding_mask)
        embeds = place_media(self.embed(input_ids), checked, checked.slots)
        causal = None
        if self.bidirectional_media and input_ids.shape[1] > 1:
            mask = self._bidirectional_mask(checked.prompt.modality_ids, key_padding_mask, cu_seqlens)
            attention_mask = mask if attention_mask is None else attention_mask & mask
            causal = False
        hidden = self.decoder(
            embeds, positions=positions, key_padding_mask=key_padding_mask, attention_mask=attention_mask,
            cu_seqlens=cu_seqlens, causal=causal,
        )
        logits = self.lm_head(self.kept_for_logits(hidden, logits_to_keep))
        return (logits, hidden) if return_hidden else logits

    def suppress_placeholders(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (..., vocab)`` with media placeholder ids at ``-inf``: a generated placeholder would
        stand for encoder output that does not exist, so generation never samples one."""
        return ban_tokens(logits, list(self.media_tokens.as_dict().values()))

    restrict_logits = suppress_placeholders
