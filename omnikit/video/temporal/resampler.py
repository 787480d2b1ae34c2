"""Perceiver resampler (Flamingo): a fixed number of learned latents summarise any number of tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from omnikit.layers.decoder import run_blocks
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.layers.positions import TimeEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.video.temporal.common import check_frame_tokens
from omnikit.video.temporal.cross_attention import CrossAttention

__all__ = [
    "LatentConfig", "LatentReader", "PerceiverResampler", "ResamplerConfig", "add_time_embedding",
    "check_token_inputs", "latent_contract_inputs",
]


def check_token_inputs(tokens: object, lengths: object, dim: int,
                       like: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``tokens (B, N, dim)`` and optional ``lengths (B,)`` valid tokens; returns the key mask.

    Padded tokens come back zeroed, so NaN or inf there cannot leak through attention values; valid
    ones must be finite (eager) and, given ``like`` (the module), in its weights' dtype."""
    checked, valid = check_frame_tokens(tokens, lengths, dim, ndim=(3,), like=like, steps=("N", "tokens"))
    return checked, None if lengths is None else lengths_to_mask(valid, checked.shape[1])


def latent_contract_inputs(lengths: Sequence[int], dim: int, seed: int) -> ContractInputs:
    """Contract inputs ``tokens (B, N, dim)`` + ``lengths`` in tokens."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(len(lengths), max(lengths), dim, generator=g)
    lens = torch.tensor(list(lengths))
    return ContractInputs({"tokens": tokens, "lengths": lens}, lens, {"tokens": 1}, "lengths")


@dataclass
class LatentConfig(NestedConfig):
    """What the configs of the :class:`LatentReader` s share: the stack, the tokens' width
    ``context_dim`` (``None``: ``dim``), the attention kernel and ``time_steps`` (> 0: a learned
    embedding of each input token's time step, ``times`` in ``forward``, is added to it)."""

    transformer: TransformerConfig = nested_field(TransformerConfig, depth=2, num_heads=8, mlp_ratio=4.0, norm_eps=1e-5)
    context_dim: int | None = None
    backend: str = "sdpa"
    time_steps: int = 0

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_ratio", "norm_eps")


@flat_keywords
@dataclass
class ResamplerConfig(LatentConfig):
    """Hyper-parameters of :class:`PerceiverResampler`."""

    num_latents: int = 64


def add_time_embedding(
    embedding: TimeEmbedding | None, tokens: torch.Tensor, times: torch.Tensor | None
) -> torch.Tensor:
    """``tokens (B, N, D)`` plus the learned embedding of ``times (B, N)`` / ``(N,)`` (Flamingo); unchanged
    without ``times``; ``times`` without a table (``time_steps=0``) is an error."""
    if times is None:
        return tokens
    if embedding is None:
        raise OmnikitValueError("`times` given but this module has no time embedding (set `time_steps` > 0)")
    return embedding(tokens, times.to(tokens.device))


class PerceiverBlock(nn.Module):
    """Latents attend to ``[tokens; latents]``, then a feed-forward (both pre-norm, residual)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, backend: str) -> None:
        super().__init__()
        self.norm_tokens, self.norm_latents, self.norm_mlp = (LayerNorm(dim, eps=eps) for _ in range(3))
        self.attn = CrossAttention(dim, num_heads, backend=backend)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio), bias=False)

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.norm_latents(latents)
        context = torch.cat([self.norm_tokens(tokens), normed], dim=1)
        if key_mask is not None:
            key_mask = torch.cat([key_mask, key_mask.new_ones(latents.shape[:2])], dim=1)
        latents = latents + self.attn(normed, context, key_padding_mask=key_mask)
        return latents + self.mlp(self.norm_mlp(latents))


class LatentReader(nn.Module):
    """Base of the modules that read ``tokens (B, N, context_dim)`` into a fixed number of learned queries
    (:class:`PerceiverResampler`, :class:`~omnikit.video.QFormer`). A subclass sets ``context_dim``,
    ``time_embed`` (``None``: no ``times``), ``blocks`` (each called as ``block(queries, tokens=,
    key_mask=)``), ``norm`` and ``gradient_checkpointing``, and forwards through :meth:`read`."""

    context_dim: int
    time_embed: TimeEmbedding | None
    blocks: nn.ModuleList
    norm: nn.Module
    gradient_checkpointing: bool

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module} (see :func:`omnikit.fusion.parameter_groups`): an adapter."""
        return {"adapters": self}

    def read(
        self, queries: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor | None, times: torch.Tensor | None,
        input_proj: nn.Module | None = None,
    ) -> EncoderOutput:
        """The learned ``queries (Q, dim)`` through the blocks over the checked tokens (time embedding
        added, then ``input_proj`` applied when given) -> ``EncoderOutput((B, Q, dim), lengths=Q)``."""
        tokens, key_mask = check_token_inputs(tokens, lengths, self.context_dim, like=self)
        tokens = add_time_embedding(self.time_embed, tokens, times)
        if input_proj is not None:
            tokens = input_proj(tokens)
        start = queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        kwargs = {"tokens": tokens, "key_mask": key_mask}
        out, _ = run_blocks(self.blocks, start, lambda block: kwargs,
                            checkpointing=self.gradient_checkpointing and self.training, return_aux=False)
        out = self.norm(out)
        return EncoderOutput(out, torch.full((out.shape[0],), queries.shape[0], dtype=torch.long, device=out.device))

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return latent_contract_inputs(lengths, self.context_dim, seed)


class PerceiverResampler(LatentReader):
    """``tokens (B, N, context_dim)`` -> ``EncoderOutput((B, num_latents, dim), lengths=num_latents)``.

    Import: ``from omnikit.video import PerceiverResampler``.

    Args:
        dim: latent (output) width.
        num_latents: output tokens per item, whatever ``N``.
        depth: resampler blocks.
        num_heads: attention heads.
        context_dim: width of the input tokens (default ``dim``; otherwise projected).
        time_steps: > 0 adds a learned embedding of each input token's time step (``times`` in
            :meth:`forward`, Flamingo's time embeddings) to the inputs; 0 (default): none.
    """

    def __init__(
        self,
        dim: int,
        num_latents: int = 64,
        depth: int = 2,
        num_heads: int = 8,
        *,
        context_dim: int | None = None,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
        backend: str = "sdpa",
        time_steps: int = 0,
    ) -> None:
        super().__init__()
        check_positive(num_latents, "num_latents")
        check_positive(depth, "depth")
        self.dim, self.num_latents, self.context_dim = dim, num_latents, context_dim or dim
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.input_proj = nn.Linear(self.context_dim, dim) if self.context_dim != dim else None
        self.time_embed = TimeEmbedding(time_steps, self.context_dim) if time_steps else None
        self.blocks = nn.ModuleList(
            PerceiverBlock(dim, num_heads, mlp_ratio, norm_eps, backend) for _ in range(depth)
        )
        self.norm = LayerNorm(dim, eps=norm_eps)
        self.output_dim = dim
        self.gradient_checkpointing = False

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, times: torch.Tensor | None = None
    ) -> EncoderOutput:
        """``tokens (B, N, context_dim)``; ``lengths (B,)`` valid tokens per item (padding ignored);
        ``times (B, N)`` or ``(N,)`` time step of every token (needs ``time_steps`` > 0)."""
        return self.read(self.latents, tokens, lengths, times, self.input_proj)
