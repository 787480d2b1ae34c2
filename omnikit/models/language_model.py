"""A decoder-only language model: token embedding -> :class:`Decoder` -> LM head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnikit.layers.decoder import Decoder, DecoderConfig, MLPFactory
from omnikit.streaming import StreamingContainer
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["CausalLM"]


class CausalLM(StreamingContainer, nn.Module):
    """``input_ids (B, T) -> logits (B, T, vocab_size)``.

    Streaming (``with lm.streaming(B):``) caches keys/values, so feeding a prompt and then one
    token at a time gives the same logits as one full forward.
    """

    supports_streaming = True
    stream_chunk = 3

    def __init__(self, config: DecoderConfig, mlp_factory: MLPFactory | None = None) -> None:
        super().__init__()
        if config.vocab_size is None or config.vocab_size < 1:
            raise OmnikitValueError(
                f"`vocab_size` expected an int >= 1 for a language model but got {config.vocab_size}"
            )
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.decoder = Decoder(config, mlp_factory)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    @property
    def output_dim(self) -> int:
        return self.config.vocab_size

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) linear and embedding weights, zero biases (GPT-2 / Llama practice)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        input_ids: ``(B, T)`` int token ids in ``[0, vocab_size)``.
        positions, key_padding_mask, cu_seqlens: see :meth:`Decoder.forward`.
        return_hidden: also return the final hidden states ``(B, T, dim)``.
        """
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise OmnikitValueError(
                f"`input_ids` expected values in [0, {self.config.vocab_size}) but got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        hidden = self.decoder(
            self.embed(input_ids), positions=positions, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens
        )
        logits = self.lm_head(hidden)
        return (logits, hidden) if return_hidden else logits

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, self.config.vocab_size, (len(lengths), max(lengths)), generator=g)
        return ContractInputs({"input_ids": ids}, torch.tensor(list(lengths)), {"input_ids": 1})
