"""A codec LM conditioned in the Thinker's embedding space (the Qwen2.5-Omni Talker's structure).

Inputs live in the Thinker's width ``E``: the Thinker's token embeddings and hidden states of the
prompt and reply, plus codec-code embeddings of width ``E``. ``thinker_proj`` maps them to the
decoder width, an M-RoPE decoder (qkv bias, no qk-norm) runs causally and ``codec_head`` scores
the next codec id::

    logits = talker(reply_states, codes, positions=pos)      # (B, T, E), (B, T) -> (B, T, codec_vocab)

Weights: ``embed`` (codec ids -> ``E``), ``thinker_proj``, ``decoder``, ``codec_head``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.layers.decoder import Decoder, DecoderConfig
from omnikit.streaming import StreamingContainer
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import check_ids, check_input, check_tensor

__all__ = ["OmniTalker", "OmniTalkerConfig"]


@dataclass
class OmniTalkerConfig:
    """Hyper-parameters of :class:`OmniTalker`.

    Attributes:
        decoder: the decoder stack (``vocab_size``: codec ids, including the special ones).
        thinker_dim: the width ``E`` of the inputs (the Thinker's embedding width).
    """

    decoder: DecoderConfig
    thinker_dim: int


class OmniTalker(StreamingContainer, nn.Module):
    """``inputs_embeds (B, T, thinker_dim)`` (+ codec ``codes (B, T)``) -> codec logits ``(B, T, vocab)`` (float32)."""

    def __init__(self, config: OmniTalkerConfig) -> None:
        super().__init__()
        self.config = config
        dec = config.decoder
        self.embed = nn.Embedding(dec.vocab_size, config.thinker_dim)
        self.thinker_proj = nn.Linear(config.thinker_dim, dec.dim)
        self.decoder = Decoder(dec)
        self.codec_head = nn.Linear(dec.dim, dec.vocab_size, bias=False)

    @property
    def output_dim(self) -> int:
        return self.config.decoder.vocab_size

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codec ids ``(B, T)`` -> ``(B, T, thinker_dim)`` embeddings."""
        check_tensor(codes, "codes", ndim=2, floating=False)
        return self.embed(codes)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        codes: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        inputs_embeds: ``(B, T, thinker_dim)`` Thinker-space inputs (prompt embeddings, reply states).
        codes: ``(B, T)`` codec ids whose embeddings are added to ``inputs_embeds`` (the previous codes
            while decoding: transformers' ``codec_embeds + thinker_reply_part``).
        positions: ``(3, B, T)`` M-RoPE ids (TMRoPE of the Thinker's prompt), ``(B, T)`` or ``None``
            (``0..T-1`` after what is cached).
        key_padding_mask: ``(B, S)`` bool, False on padding (S includes cached positions).
        return_hidden: also return the decoder's final hidden states ``(B, T, dim)``.
        """
        check_input(inputs_embeds, "inputs_embeds", self, shape=("B", "T", self.config.thinker_dim))
        if codes is not None:
            check_tensor(codes, "codes", shape=tuple(inputs_embeds.shape[:2]), floating=False)
            check_ids(codes, "codes", self.embed.num_embeddings, what="codes")
            inputs_embeds = inputs_embeds + self.embed(codes).to(inputs_embeds.dtype)
        hidden = self.decoder(self.thinker_proj(inputs_embeds), positions=positions, key_padding_mask=key_padding_mask)
        logits = self.codec_head(hidden).float()
        return (logits, hidden) if return_hidden else logits

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Random Thinker-space inputs and codes, right padded (causal: padding never reaches valid steps)."""
        g = torch.Generator().manual_seed(seed)
        embeds = torch.randn(len(lengths), max(lengths), self.config.thinker_dim, generator=g)
        codes = torch.randint(0, self.config.decoder.vocab_size, (len(lengths), max(lengths)), generator=g)
        return ContractInputs({"inputs_embeds": embeds, "codes": codes}, torch.tensor(list(lengths)),
                              {"inputs_embeds": 1, "codes": 1}, None)
