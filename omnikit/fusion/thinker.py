"""The Thinker: a decoder LM (dense or MoE layers, M-RoPE) that reads fused media and generates text.

``Thinker`` extends :class:`omnikit.models.CausalLM` (same weights and state-dict keys) with

- ``media``: encoder outputs scattered into the sequence at their placeholder tokens;
- optional bidirectional attention inside each media item (``bidirectional_media=True``);
- ``stream_generate`` / ``generate``: KV-cached decoding with sampling controls, yielding each
  token as soon as it exists together with the hidden state and embedding a Talker consumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from omnikit.fusion.early import MediaInput, fusion_attention_mask, scatter_media
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.sampling import GREEDY, Sampling, check_stream_settings, sample_next
from omnikit.layers.decoder import DecoderConfig, MLPFactory
from omnikit.layers.masks import segment_ids_from_cu_seqlens
from omnikit.models.language_model import CausalLM
from omnikit.utils.checks import OmnikitValueError, check_int_in_range, check_tensor

__all__ = ["GenerationOutput", "Thinker", "ThinkerStep"]


@dataclass
class ThinkerStep:
    """One generated token per item, with what a Talker needs from it.

    Attributes:
        tokens: ``(B,)`` the new token ids.
        embeds: ``(B, D)`` their input embeddings.
        hidden: ``(B, D)`` the Thinker's final hidden state at the new token.
        finished: ``(B,)`` bool, True for items that have emitted ``eos_token_id``.
    """

    tokens: torch.Tensor
    embeds: torch.Tensor
    hidden: torch.Tensor
    finished: torch.Tensor


@dataclass
class GenerationOutput:
    """``tokens (B, N)``, ``embeds``/``hidden (B, N, D)`` of all generated steps."""

    tokens: torch.Tensor
    embeds: torch.Tensor
    hidden: torch.Tensor

    @classmethod
    def stack(cls, steps: list[ThinkerStep]) -> GenerationOutput:
        if not steps:
            raise OmnikitValueError("no generation steps to stack")
        return cls(*(torch.stack([getattr(s, f) for s in steps], dim=1) for f in ("tokens", "embeds", "hidden")))


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
        self.bidirectional_media = bidirectional_media
        if bidirectional_media:  # causality then comes from the mask built in forward
            for block in self.decoder.blocks:
                block.attn.causal = False

    @property
    def uses_mrope(self) -> bool:
        return self.config.mrope_sections is not None

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise OmnikitValueError(
                f"`input_ids` expected values in [0, {self.config.vocab_size}) but got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )

    def _bidirectional_mask(self, input_ids, key_padding_mask, cu_seqlens) -> torch.Tensor:
        cached = self.decoder.blocks[0].attn.cache_length
        batch, length = input_ids.shape
        segments = None if cu_seqlens is None else segment_ids_from_cu_seqlens(cu_seqlens, length)[None]
        chunk_padding = None if key_padding_mask is None else key_padding_mask[:, cached:]
        mask = fusion_attention_mask(
            self.media_tokens.modality_ids(input_ids), segment_ids=segments, key_padding_mask=chunk_padding
        )
        if cached:
            past = torch.ones(batch, 1, length, cached, dtype=torch.bool, device=mask.device)
            if key_padding_mask is not None:
                past = past & key_padding_mask[:, None, None, :cached]
            mask = torch.cat((past, mask), dim=-1)
        return mask

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        media: Mapping[str, MediaInput] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings ``(B, T, dim)`` with media scattered in at its placeholders."""
        self._check_ids(input_ids)
        if key_padding_mask is not None:  # (B, cached + T): checked before media scatter and masks use it
            cached = self.decoder.blocks[0].attn.cache_length
            check_tensor(key_padding_mask, "key_padding_mask", shape=(input_ids.shape[0], cached + input_ids.shape[1]),
                         dtype=torch.bool)
        embeds = self.embed(input_ids)
        if media or self.media_tokens.as_dict():
            padding = None if key_padding_mask is None else key_padding_mask[:, -input_ids.shape[1]:]
            embeds = scatter_media(embeds, input_ids, media or {}, self.media_tokens, key_padding_mask=padding)
        return embeds

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
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        input_ids: ``(B, T)`` ids, media stood for by placeholder tokens.
        media: ``{modality: (N, D) tokens or EncoderOutput}`` (see :func:`scatter_media`).
        positions: ``(3, B, T)`` TMRoPE ids (see :func:`tmrope_position_ids`), or ``(B, T)``.
        key_padding_mask: ``(B, S)`` bool, False on padding (S includes cached positions).
        attention_mask: extra bool mask broadcastable to ``(B, H, T, S)``.
        cu_seqlens: ``(N+1,)`` boundaries of samples packed into a batch-1 row.
        return_hidden: also return the final hidden states ``(B, T, dim)``.
        """
        embeds = self.embed_inputs(input_ids, media, key_padding_mask)
        if self.bidirectional_media and input_ids.shape[1] > 1:
            mask = self._bidirectional_mask(input_ids, key_padding_mask, cu_seqlens)
            attention_mask = mask if attention_mask is None else attention_mask & mask
        hidden = self.decoder(
            embeds, positions=positions, key_padding_mask=key_padding_mask, attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
        )
        logits = self.lm_head(hidden)
        return (logits, hidden) if return_hidden else logits

    def suppress_placeholders(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (..., vocab)`` with media placeholder ids at ``-inf``: a generated placeholder would
        stand for encoder output that does not exist, so generation never samples one."""
        ids = list(self.media_tokens.as_dict().values())
        if not ids:
            return logits
        return logits.index_fill(-1, torch.tensor(ids, device=logits.device), float("-inf"))

    @torch.no_grad()
    def stream_generate(
        self,
        input_ids: torch.Tensor,
        *,
        media: Mapping[str, MediaInput] | None = None,
        positions: torch.Tensor | None = None,
        next_position: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        sampling: Sampling = GREEDY,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[ThinkerStep]:
        """Prefill the prompt once, then yield one :class:`ThinkerStep` per generated token.

        Media placeholder ids are never generated (see :meth:`suppress_placeholders`).

        Args:
            input_ids, media, positions, key_padding_mask: the prompt (left padding allowed
                with a mask and matching positions).
            next_position: ``(B,)`` position id of the first generated token (the second output
                of :func:`tmrope_position_ids`); default: the prompt length.
            max_new_tokens: upper bound on generated tokens.
            sampling: temperature / top-k / top-p / repetition penalty (default greedy).
            eos_token_id: items stop at this token (then repeat it) and the loop ends when all
                items have stopped.
            generator: random source for sampling.
        """
        check_stream_settings(max_new_tokens=max_new_tokens, sampling=sampling)
        if eos_token_id is not None:
            check_int_in_range(eos_token_id, "eos_token_id", 0, self.config.vocab_size)
        batch, length = input_ids.shape
        device = input_ids.device
        start = torch.full((batch,), length, device=device) if next_position is None else next_position
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        generated: list[torch.Tensor] = []
        with self.streaming(batch):
            logits = self(input_ids, media=media, positions=positions, key_padding_mask=key_padding_mask)[:, -1]
            for step in range(max_new_tokens):
                previous = torch.stack(generated, dim=1) if generated else None
                tokens = sample_next(self.suppress_placeholders(logits), sampling, generator=generator,
                                     previous=previous)
                if eos_token_id is not None:
                    tokens = torch.where(finished, torch.full_like(tokens, eos_token_id), tokens)
                generated.append(tokens)
                pos = (start + step)[:, None].to(start.dtype)
                if self.uses_mrope:
                    pos = pos.expand(3, batch, 1)
                if key_padding_mask is not None:
                    key_padding_mask = torch.cat((key_padding_mask, torch.ones_like(finished)[:, None]), dim=1)
                out, hidden = self(tokens[:, None], positions=pos, key_padding_mask=key_padding_mask,
                                   return_hidden=True)
                if eos_token_id is not None:
                    finished = finished | (tokens == eos_token_id)
                yield ThinkerStep(tokens, self.embed(tokens), hidden[:, -1], finished.clone())
                if bool(finished.all()):
                    return
                logits = out[:, -1]

    def generate(
        self, input_ids: torch.Tensor, *, on_token: Callable[[ThinkerStep], None] | None = None, **kwargs
    ) -> GenerationOutput:
        """Run :meth:`stream_generate` to the end; ``on_token`` sees every step as it is made."""
        steps = []
        for step in self.stream_generate(input_ids, **kwargs):
            if on_token is not None:
                on_token(step)
            steps.append(step)
        return GenerationOutput.stack(steps)
