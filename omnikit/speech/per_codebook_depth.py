"""Moshi's depth decoder: a small causal transformer over the ``K`` codebooks of one frame whose every
linear layer holds one weight per position (per codebook).

Position ``k`` reads ``input_proj_k(h) + e_k`` where ``e_0`` embeds the frame's text token and
``e_k`` (``k >= 1``) codebook ``k - 1``'s code, and predicts codebook ``k`` through ``heads_k``.
Unlike :class:`~omnikit.speech.CodePredictor` (one shared decoder, ``K + 1`` positions, rotary, a
final norm) it has ``K`` positions, no rotary, no final norm and no biases: the layout of
transformers' ``MoshiDepthDecoder`` (``MoshiFlexibleLinear`` weights ``(K, out, in)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.decoder import DecoderConfig
from omnikit.layers.norm import RMSNorm
from omnikit.speech.heads import Pick, TalkerHead
from omnikit.utils.checks import OmnikitValueError, check_tensor

if TYPE_CHECKING:
    from omnikit.speech.duplex import DuplexConfig

__all__ = ["PerCodebookAttention", "PerCodebookDepth", "PerCodebookDepthHead", "PerCodebookLinear", "PerCodebookMLP"]

#: Keys and values of every layer cached while :meth:`PerCodebookDepth.sample` decodes position by position.
LayerCache = list[tuple[torch.Tensor, torch.Tensor]]


class PerCodebookLinear(nn.Module):
    """``K`` linear maps without bias, weight ``(K, out_features, in_features)``: position ``t`` of the
    input uses ``weight[start + t]``. ``(N, T, in) -> (N, T, out)`` with ``start + T <= K``."""

    def __init__(self, num_codebooks: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(num_codebooks, out_features, in_features) / math.sqrt(in_features))

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        weight = self.weight[start : start + x.shape[1]]
        if weight.shape[0] != x.shape[1]:
            raise OmnikitValueError(
                f"`x` has {x.shape[1]} positions from {start} but the layer holds {self.weight.shape[0]}"
            )
        return torch.einsum("nti,toi->nto", x, weight)

    def extra_repr(self) -> str:
        return f"codebooks={self.weight.shape[0]}, in={self.in_features}, out={self.out_features}"


class PerCodebookAttention(nn.Module):
    """Causal self-attention with per-position ``qkv`` (q, k, v rows stacked) and ``out`` weights, no rotary."""

    def __init__(self, num_codebooks: int, dim: int, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise OmnikitValueError(f"`num_kv_heads` ({num_kv_heads}) must divide `num_heads` ({num_heads})")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.qkv = PerCodebookLinear(num_codebooks, dim, (num_heads + 2 * num_kv_heads) * head_dim)
        self.out = PerCodebookLinear(num_codebooks, num_heads * head_dim, dim)

    def forward(self, x: torch.Tensor, start: int = 0, cache: LayerCache | None = None) -> torch.Tensor:
        """``x (N, T, dim)`` at positions ``start ..``; ``cache`` (a list) holds this layer's earlier
        keys and values and receives the new ones (``None``: the ``T`` positions attend among themselves)."""
        batch, length, _ = x.shape
        heads, kv = self.num_heads, self.num_kv_heads
        q, k, v = self.qkv(x, start).view(batch, length, heads + 2 * kv, self.head_dim).transpose(1, 2).split(
            [heads, kv, kv], dim=1)
        if cache is not None:
            if cache:
                k, v = torch.cat((cache[0][0], k), dim=2), torch.cat((cache[0][1], v), dim=2)
                cache.clear()
            cache.append((k, v))
        if kv != heads:
            k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)  # cached keys all precede a 1-step query
        return self.out(out.transpose(1, 2).reshape(batch, length, heads * self.head_dim), start)


class PerCodebookMLP(nn.Module):
    """Gated MLP with per-position weights: ``fc2(silu(gate) * up)``, ``fc1`` giving gate then up."""

    def __init__(self, num_codebooks: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = PerCodebookLinear(num_codebooks, dim, 2 * hidden)
        self.fc2 = PerCodebookLinear(num_codebooks, hidden, dim)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        gate, up = self.fc1(x, start).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up, start)


class PerCodebookLayer(nn.Module):
    """Pre-norm block: ``h = x + attn(norm1(x))``, ``y = h + mlp(norm2(h))`` (norms shared by the positions)."""

    def __init__(self, num_codebooks: int, config: DecoderConfig) -> None:
        super().__init__()
        heads = config.num_heads
        head_dim = config.head_dim or config.dim // heads
        self.norm1 = RMSNorm(config.dim, config.norm_eps)
        self.attn = PerCodebookAttention(num_codebooks, config.dim, heads, config.num_kv_heads or heads, head_dim)
        self.norm2 = RMSNorm(config.dim, config.norm_eps)
        self.mlp = PerCodebookMLP(num_codebooks, config.dim, config.mlp_hidden or 4 * config.dim)

    def forward(self, x: torch.Tensor, start: int = 0, cache: LayerCache | None = None) -> torch.Tensor:
        h = x + self.attn(self.norm1(x), start, cache)
        return h + self.mlp(self.norm2(h), start)


class PerCodebookDepth(nn.Module):
    """``forward(h (N, in_dim), tokens (N, K)) -> logits (N, K, codebook_size)`` with teacher forcing.

    ``tokens[:, 0]`` is the frame's text token (ids ``[0, text_vocab]``), ``tokens[:, k]`` for
    ``k >= 1`` codebook ``k - 1``'s code (``[0, codebook_size]``; ``codebook_size``: pad); position
    ``k`` predicts codebook ``k``. :meth:`sample` decodes the ``K`` codes one position at a time
    with a key/value cache. Weights: ``text_embed``, ``code_embed.{k}``, ``input_proj``, ``layers``, ``heads``.

    Args:
        in_dim: width of the context ``h`` (the temporal transformer's).
        config: width, depth, heads, ``mlp_hidden`` (the gate's width) and ``norm_eps``; rotary and
            the final norm do not apply.
        num_codebooks: ``K``.
        text_vocab: text ids; the text embedding has one more row (the text start id).
        codebook_size: codes per codebook; embeddings have one more row (the pad id).
    """

    def __init__(self, in_dim: int, config: DecoderConfig, num_codebooks: int, text_vocab: int,
                 codebook_size: int) -> None:
        super().__init__()
        k, d = num_codebooks, config.dim
        self.num_codebooks, self.codebook_size = k, codebook_size
        self.text_embed = nn.Embedding(text_vocab + 1, d)
        self.code_embed = nn.ModuleList(nn.Embedding(codebook_size + 1, d) for _ in range(k - 1))
        self.input_proj = PerCodebookLinear(k, in_dim, d)
        self.layers = nn.ModuleList(PerCodebookLayer(k, config) for _ in range(config.depth))
        self.heads = PerCodebookLinear(k, d, codebook_size)

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Tokens ``(N, T)`` of positions ``start ..`` -> embeddings ``(N, T, dim)``."""
        tables = [self.text_embed, *self.code_embed]
        return torch.stack([tables[start + t](tokens[:, t]) for t in range(tokens.shape[1])], dim=1)

    def _run(self, h: torch.Tensor, tokens: torch.Tensor, start: int, caches: list[LayerCache] | None) -> torch.Tensor:
        x = self._embed(tokens, start) + self.input_proj(h[:, None].expand(-1, tokens.shape[1], -1), start)
        for i, layer in enumerate(self.layers):
            x = layer(x, start, None if caches is None else caches[i])
        return self.heads(x, start)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        check_tensor(tokens, "tokens", shape=(h.shape[0], self.num_codebooks), floating=False)
        return self._run(h, tokens, 0, None)

    def sample(
        self, h: torch.Tensor, text: torch.Tensor, pick: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Codes ``(N, K)`` of one frame after the text token ``text (N,)``; ``pick(k, logits (N, V)) -> (N,)``."""
        caches: list[LayerCache] = [[] for _ in self.layers]
        token, codes = text[:, None], []
        for k in range(self.num_codebooks):
            logits = self._run(h, token, k, caches)[:, 0]
            codes.append(pick(k, logits))
            token = codes[-1][:, None]
        return torch.stack(codes, dim=1)


class PerCodebookDepthHead(TalkerHead):
    """The full-duplex model's head with Moshi's depth decoder: a text head on the temporal state, then
    :class:`PerCodebookDepth` over the ``K`` codebooks (its position 0 reads the text token). Modules:
    ``heads`` (``dim -> text_vocab``), ``predictor``. Codes are scored over ``codebook_size`` ids (no pad)."""

    def __init__(self, config: DuplexConfig) -> None:
        super().__init__(config)
        self.heads = nn.Linear(config.dim, config.text_vocab, bias=False)
        self.predictor = PerCodebookDepth(config.dim, config.predictor, config.num_codebooks, config.text_vocab,
                                          config.codebook_size)
        self.modules = {"heads": self.heads, "predictor": self.predictor}

    def flat_logits(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``h (B, S, dim)``, ``tokens (B, 1 + K, S)`` (text, then the codes) -> text and
        code logits side by side ``(B, S, text_vocab + K * codebook_size)``."""
        batch, steps, _ = h.shape
        inputs = tokens[:, :-1].transpose(1, 2).flatten(0, 1)  # the last codebook is never read
        codes = self.predictor(h.flatten(0, 1), inputs).reshape(batch, steps, -1)
        return torch.cat((self.heads(h), codes), dim=-1)

    def next_column(self, h: torch.Tensor, step: int, pick: Pick) -> torch.Tensor:
        text = pick(0, self.heads(h))
        codes = self.predictor.sample(h, text, lambda k, logits: pick(k + 1, logits))
        return torch.cat((text[:, None], codes), dim=1)
