"""The ``"depth"`` (Moshi) and ``"mtp"`` (Qwen3-Omni) Talker strategies: a depth transformer over codebooks."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import torch
from torch import nn

from omnikit.speech.depth import CodePredictor
from omnikit.speech.heads import Pick, TalkerHead, register_talker_head

if TYPE_CHECKING:
    from omnikit.models.decode_cache import CompileOption
    from omnikit.speech.talker import TalkerConfig

__all__ = ["DepthHead", "MTPHead"]


@register_talker_head("depth")
class DepthHead(TalkerHead):
    """A small depth transformer (:class:`CodePredictor`) runs over the ``K`` codebooks of each frame,
    conditioned on the temporal state. Module: ``predictor``.

    ``vocab_sizes``: ids of each of the frame's positions (default ``K`` times ``config.vocab``); the
    full-duplex model gives ``[text_vocab] + [codebook_size + 1] * K`` (its text token first).
    """

    #: codebooks predicted by a linear head on the temporal state before the predictor runs.
    first = 0

    def __init__(self, config: TalkerConfig, vocab_sizes: Sequence[int] | None = None) -> None:
        super().__init__(config)
        vocab_sizes = [config.vocab] * config.num_codebooks if vocab_sizes is None else list(vocab_sizes)
        self.heads = nn.Linear(config.dim, vocab_sizes[0], bias=False) if self.first else None
        self.predictor = CodePredictor(config.dim, config.predictor, vocab_sizes, first=self.first)
        self.modules = {"predictor": self.predictor} if self.heads is None else {
            "heads": self.heads, "predictor": self.predictor}

    def flat_logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``h (B, S, dim)``, ``codes (B, K, S)`` -> the logits of every position side by
        side, ``(B, S, sum(vocab_sizes))`` (the positions' vocabularies may differ)."""
        batch, steps, _ = h.shape
        logits = self.predictor(h.flatten(0, 1), codes.transpose(1, 2).flatten(0, 1)).view(batch, steps, -1)
        return logits if self.heads is None else torch.cat((self.heads(h), logits), dim=-1)

    def logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.flat_logits(h, codes).unflatten(-1, (-1, self.config.vocab))

    def next_column(self, h: torch.Tensor, step: int, pick: Pick) -> torch.Tensor:
        first = None if self.heads is None else pick(0, self.heads(h))
        return self.predictor.sample(h, first, pick)

    def static_decoding(self, batch_size: int, compile: CompileOption) -> AbstractContextManager[None]:
        return self.predictor.static_decoding(batch_size, compile)


@register_talker_head("mtp")
class MTPHead(DepthHead):
    """The Talker's own head predicts codebook 0 and the code predictor the remaining ``K - 1``.
    Modules: ``heads`` (``dim -> vocab``), ``predictor``."""

    first = 1
