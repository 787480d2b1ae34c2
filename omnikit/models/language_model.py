"""A decoder-only language model: token embedding -> :class:`Decoder` -> LM head."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from omnikit.layers.decoder import Decoder, DecoderConfig, MLPFactory
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.layers.linear import Linear
from omnikit.models.generation import GenerationOutput, GenerationStep, generate, stream_generate
from omnikit.streaming import StreamingContainer
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_ids, check_int_in_range
from omnikit.utils.parallel import VOCAB_EMBED, VOCAB_HEAD, ParallelPlan

__all__ = ["CausalLM", "TokenLM"]


class TokenLM:
    """What every token language model shares (:class:`CausalLM`, Gemma 4's): id checks, KV-cached
    generation and the contract's inputs. A subclass has ``config.vocab_size``, ``embed``,
    ``forward(input_ids, positions=, key_padding_mask=, logits_to_keep=)`` and ``decode_step``."""

    config: Any
    uses_mrope = False

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module}: the language model trains as ``lm`` (see :func:`omnikit.fusion.parameter_groups`)."""
        return {"lm": self}

    @property
    def output_dim(self) -> int:
        return self.config.vocab_size

    def parallel_plan(self) -> ParallelPlan:
        """Vocabulary-parallel embedding and LM head, tied again when the model ties them."""
        tied = [("lm_head.weight", "embed.weight")] if self.config.tie_embeddings else []
        return ParallelPlan(tp={"embed": VOCAB_EMBED, "lm_head": VOCAB_HEAD}, tied=tied)

    def check_ids(self, input_ids: torch.Tensor) -> None:
        """``input_ids (B, T)`` int in ``[0, vocab_size)``: the one value check of a public entry point
        (skipped while compiling; generated tokens never come through it)."""
        check_ids(input_ids, "input_ids", self.config.vocab_size, ndim=2)

    @staticmethod
    def kept_for_logits(hidden: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        """The positions of ``hidden (B, T, dim)`` the LM head reads: the last ``logits_to_keep`` (0: all, as in
        transformers). A prompt before decoding needs only its last position's logits: ``(T, vocab)`` of
        them would be most of a long prompt's memory (151,936 x 4 bytes = 0.6 MB a position in float32)."""
        check_int_in_range(logits_to_keep, "logits_to_keep", 0)
        return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]

    def restrict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (..., vocab)`` with the ids generation must never pick at ``-inf`` (none here)."""
        return logits

    def stream_generate(self, input_ids: torch.Tensor, **kwargs: Any) -> Iterator[GenerationStep]:
        """KV-cached decoding, one :class:`GenerationStep` per token (see :func:`.generation.stream_generate`)."""
        return stream_generate(self, input_ids, **kwargs)

    def generate(
        self, input_ids: torch.Tensor, *, on_token: Callable[[GenerationStep], None] | None = None, **kwargs: Any
    ) -> GenerationOutput:
        """Run :meth:`stream_generate` to the end; ``on_token`` sees every step as it is made."""
        return generate(self.stream_generate(input_ids, **kwargs), on_token)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, self.config.vocab_size, (len(lengths), max(lengths)), generator=g)
        return ContractInputs({"input_ids": ids}, torch.tensor(list(lengths)), {"input_ids": 1})


class CausalLM(TokenLM, StreamingContainer, nn.Module):
    """``input_ids (B, T) -> logits (B, T, vocab_size)``.

    Streaming (``with lm.streaming(B):``) caches keys/values, so feeding a prompt and then one
    token at a time gives the same logits as one full forward; :meth:`stream_generate` /
    :meth:`generate` decode that way (see :mod:`omnikit.models.generation`).

    A :class:`~omnikit.layers.hybrid.HybridConfig` makes the decoder a :class:`~omnikit.layers.hybrid.HybridDecoder`
    (Gated DeltaNet blocks beside full attention: Qwen3-Next, Qwen3.5), whose fixed-size states
    stream beside the KV caches.
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
        self.decoder = (HybridDecoder if isinstance(config, HybridConfig) else Decoder)(config, mlp_factory)
        self.lm_head = Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) linear and embedding weights, zero biases (GPT-2 / Llama practice)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @property
    def uses_mrope(self) -> bool:
        """Positions are ``(3, B, T)`` M-RoPE ids."""
        return self.config.mrope_sections is not None

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        return_hidden: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
        input_ids: ``(B, T)`` int token ids in ``[0, vocab_size)``.
        positions, key_padding_mask, cu_seqlens: see :meth:`Decoder.forward`.
        return_hidden: also return the final hidden states ``(B, T, dim)``.
        logits_to_keep: logits of the last this many positions only, ``(B, logits_to_keep, vocab)`` (0: all;
            see :meth:`kept_for_logits`); the hidden states stay whole.
        """
        self.check_ids(input_ids)
        hidden = self.decoder(
            self.embed(input_ids), positions=positions, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens
        )
        logits = self.lm_head(self.kept_for_logits(hidden, logits_to_keep))
        return (logits, hidden) if return_hidden else logits

    def decode_step(
        self, tokens: torch.Tensor, *, positions: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One generated token per item, inside an open stream: ``tokens (B, 1)`` -> logits
        ``(B, 1, vocab)`` and hidden ``(B, 1, dim)``. No value checks: the ids come from the model."""
        hidden = self.decoder(self.embed(tokens), positions=positions, key_padding_mask=key_padding_mask)
        return self.lm_head(hidden), hidden
