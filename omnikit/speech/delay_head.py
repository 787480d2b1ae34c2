"""The ``"delay"`` Talker strategy (MusicGen): codebook ``k`` delayed by ``k`` steps, ``K`` linear heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from omnikit.audio.layouts import delay_codes, undelay_codes, undelay_logits
from omnikit.speech.heads import Pick, TalkerHead, register_talker_head

if TYPE_CHECKING:
    from omnikit.speech.talker import TalkerConfig

__all__ = ["DelayHead"]


@register_talker_head("delay")
class DelayHead(TalkerHead):
    """``K`` heads predict one column of the delayed layout per step; frame ``f`` completes at step
    ``f + K - 1``. Module: ``heads`` (``dim -> K * vocab``)."""

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__(config)
        self.heads = nn.Linear(config.dim, config.num_codebooks * config.vocab, bias=False)
        self.modules = {"heads": self.heads}

    @property
    def delay(self) -> int:
        return self.config.num_codebooks - 1

    def layout(self, codes: torch.Tensor) -> torch.Tensor:
        return delay_codes(codes, self.bos)

    def logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = h.shape
        return undelay_logits(self.heads(h).view(batch, steps, self.config.num_codebooks, self.config.vocab))

    def next_column(self, h: torch.Tensor, step: int, pick: Pick) -> torch.Tensor:
        k = self.config.num_codebooks
        logits = self.heads(h).view(-1, k, self.config.vocab)
        column = torch.stack([pick(i, logits[:, i]) for i in range(k)], dim=1)
        # codebook i holds frame step - i: before it starts it is padding, as in delay_codes
        return torch.where(torch.arange(k, device=h.device) > step, self.bos, column)

    def frame(self, columns: list[torch.Tensor]) -> torch.Tensor | None:
        k = self.config.num_codebooks
        if len(columns) < k:
            return None
        return undelay_codes(torch.stack(columns[-k:], dim=2))[:, :, 0]
