"""Gemma 4's language model: a decoder of sandwich-normed blocks with sliding and global layers.

What sets it apart from :class:`~omnikit.models.CausalLM` (all built from the shared blocks):

- embeddings scaled by ``sqrt(dim)``; a final-logit softcap ``c * tanh(logits / c)``;
- a layer pattern of sliding-window and global layers; global layers have their own head size
  (and, with ``k_eq_v``, their own key/value heads and values equal to the key projection) and a
  proportional partial rotary; every layer RMS-normalises q and k (weights) and v (no weight) and
  attends with softmax scale 1;
- KV sharing: the last ``num_kv_shared_layers`` layers have no key/value projections and attend
  over the keys and values of the last earlier layer of their type (see :class:`Attention`);
- per-layer embeddings (E2B / E4B): a second token embedding of ``depth * per_layer_dim`` plus a
  projection of the input embeddings, fed to each block through a small gated residual branch;
- a MoE beside the dense MLP (26B-A4B): tanh-GELU experts routed by a :class:`ScaledNormRouter`
  reading the residual stream, the two branches normed and summed;
- four norms per block (around attention and around the MLP) and a ``layer_scalar`` buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.layers.attention import Attention
from omnikit.layers.decoder import BlockStack, _default_positions, run_blocks
from omnikit.layers.mlp import SwiGLU, gate_activation
from omnikit.layers.norm import RMSNorm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.models.language_model import TokenLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.moe.scaled_router import ScaledNormRouter
from omnikit.streaming import StreamingContainer
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_choice, check_positive, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.config_checks import Range

__all__ = ["Gemma4Block", "Gemma4Config", "Gemma4Decoder", "Gemma4LM", "PerLayerBranch", "PerLayerEmbedding",
           "kv_sharing"]

LAYER_TYPES = ("sliding", "full")
#: Range of the counts whose 0 turns a feature off (checked by ``create_model`` overrides).
_OFF_WHEN_ZERO = {"range": Range(0)}


@flat_keywords
@dataclass
class Gemma4Config(NestedConfig):
    """Hyper-parameters of a Gemma 4 language model.

    Attributes:
        transformer: the stack, also read and given as flat keywords: ``dim``, ``depth``, ``num_heads``
            (width, layers, query heads); ``num_kv_heads``, ``head_dim`` (key/value heads and head size of
            sliding layers); ``mlp_hidden`` (width of the gated tanh-GELU MLP, doubled in KV-shared layers
            with ``double_wide_mlp``); ``sliding_window`` (its ``window``: keys a sliding layer's query sees,
            itself included); ``norm_eps``; ``rope_base`` (rotary base of sliding layers). ``num_kv_heads``,
            ``head_dim`` and ``mlp_hidden`` are required.
        vocab_size: vocabulary.
        layer_types: ``"sliding"`` / ``"full"`` per layer; default: every 6th layer and the last full.
        global_head_dim, global_kv_heads: head size and key/value heads of full layers (default: as sliding).
        k_eq_v: full layers take their values from the key projection (no ``v`` rows).
        num_kv_shared_layers: the last this many layers reuse the keys/values of the last earlier
            layer of their type.
        global_rope_base, global_rotary_fraction: rotary of full layers (proportional: the first
            ``fraction`` of the frequencies rotate; sliding layers rotate all dims with ``rope_base``).
        per_layer_dim, per_layer_vocab: per-layer embeddings (0: none; vocabulary default ``vocab_size``).
        final_softcap: cap of the final logits (None: none).
        num_experts, top_k, expert_hidden: the MoE beside every dense MLP (0 experts: none).
        causal: False for bidirectional attention everywhere.
    """

    transformer: TransformerConfig = nested_field(TransformerConfig, window=512, norm_eps=1e-6, rope_base=10_000.0)
    vocab_size: int
    layer_types: tuple[str, ...] | None = None
    global_head_dim: int | None = None
    global_kv_heads: int | None = None
    k_eq_v: bool = False
    num_kv_shared_layers: int = field(default=0, metadata=_OFF_WHEN_ZERO)
    double_wide_mlp: bool = False
    global_rope_base: float = 1_000_000.0
    global_rotary_fraction: float = 0.25
    per_layer_dim: int = field(default=0, metadata=_OFF_WHEN_ZERO)
    per_layer_vocab: int | None = None
    final_softcap: float | None = None
    num_experts: int = 0
    top_k: int = field(default=0, metadata=_OFF_WHEN_ZERO)
    expert_hidden: int = 0
    tie_embeddings: bool = True
    causal: bool = True
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "norm_eps", "rope_base",
        sliding_window="window")

    def __post_init__(self) -> None:
        for name in ("num_kv_heads", "head_dim", "mlp_hidden"):
            if getattr(self.transformer, name) is None:
                raise OmnikitTypeError(f"Gemma4Config: `{name}` expected an int but got None (it has no default)")

    def types(self) -> tuple[str, ...]:
        """The layer types, the default pattern filled in (five sliding, one full; the last full)."""
        if self.layer_types is None:
            return tuple("full" if (i + 1) % 6 == 0 or i == self.depth - 1 else "sliding" for i in range(self.depth))
        return tuple(self.layer_types)


def kv_sharing(types: Sequence[str], num_shared: int) -> list[tuple[str | None, str | None]]:
    """``(kv_store, kv_reuse)`` of every layer: the last ``num_shared`` layers reuse the keys and
    values that the last earlier layer of their type stores (under the type's name)."""
    depth = len(types)
    first_shared = depth - num_shared
    if num_shared == 0:
        return [(None, None)] * depth
    if num_shared < 0 or first_shared < 1:
        raise OmnikitValueError(f"`num_kv_shared_layers` expected an int in [0, {depth - 1}] but got {num_shared}")
    producers = {t: max(i for i in range(first_shared) if types[i] == t) for t in set(types[:first_shared])}
    missing = sorted(set(types[first_shared:]) - set(producers))
    if missing:
        raise OmnikitValueError(f"`num_kv_shared_layers`: no earlier layer of type(s) {missing} stores keys/values")
    return [
        (types[i] if producers.get(types[i]) == i else None, types[i] if i >= first_shared else None)
        for i in range(depth)
    ]


class PerLayerEmbedding(nn.Module):
    """Per-layer inputs ``(B, T, depth, per_layer_dim)`` from token ids and input embeddings:
    ``(norm(proj(embeds) / sqrt(dim)) + embed(ids) * sqrt(per_layer_dim)) / sqrt(2)``.

    Weights: ``embed (vocab, depth * per_layer_dim)``, ``proj (depth * per_layer_dim, dim)``, ``norm``.
    """

    def __init__(self, vocab: int, dim: int, depth: int, per_layer_dim: int, eps: float) -> None:
        super().__init__()
        self.depth, self.per_layer_dim, self.dim = depth, per_layer_dim, dim
        self.embed = nn.Embedding(vocab, depth * per_layer_dim)
        self.proj = nn.Linear(dim, depth * per_layer_dim, bias=False)
        self.norm = RMSNorm(per_layer_dim, eps)

    def forward(self, input_ids: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, T)`` (None: the projection alone), ``embeds (B, T, dim)``."""
        shape = (*embeds.shape[:-1], self.depth, self.per_layer_dim)
        projected = self.norm((self.proj(embeds) * self.dim**-0.5).view(shape))
        if input_ids is None:
            return projected
        tokens = self.embed(input_ids) * torch.tensor(self.per_layer_dim**0.5, dtype=self.embed.weight.dtype)
        return (projected + tokens.view(shape)) * 2**-0.5


class PerLayerBranch(nn.Module):
    """A block's per-layer-embedding branch, a small gated MLP: ``x (B, T, dim)``, ``per_layer_input
    (B, T, per_layer_dim)`` -> ``norm(proj(gelu_tanh(gate(x)) * per_layer_input))`` ``(B, T, dim)``.

    Weights: ``gate (per_layer_dim, dim)``, ``proj (dim, per_layer_dim)``, ``norm``.
    """

    def __init__(self, dim: int, per_layer_dim: int, eps: float) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, per_layer_dim, bias=False)
        self.proj = nn.Linear(per_layer_dim, dim, bias=False)
        self.norm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, per_layer_input: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(gate_activation(self.gate(x), "gelu_tanh") * per_layer_input))


class Gemma4Block(nn.Module):
    """One Gemma 4 layer ``(B, T, dim) -> (B, T, dim)``::

        h = x + post_attn_norm(attn(norm1(x)))
        m = mlp(norm2(h))                                   # or, with a MoE beside it:
        m = post_mlp_norm1(m) + post_moe_norm(moe(pre_moe_norm(h), route_input=h))
        y = h + post_mlp_norm(m)
        y = y + per_layer(y, per_layer_input)               # per-layer embeddings (PerLayerBranch)
        y = y * layer_scalar
    """

    def __init__(self, config: Gemma4Config, index: int) -> None:
        super().__init__()
        types = config.types()
        self.index, self.layer_type = index, types[index]
        store, reuse = kv_sharing(types, config.num_kv_shared_layers)[index]
        full = self.layer_type == "full"
        eps, dim = config.norm_eps, config.dim
        self.attn = Attention(
            dim, config.num_heads,
            (config.global_kv_heads or config.num_kv_heads) if full else config.num_kv_heads,
            (config.global_head_dim or config.head_dim) if full else config.head_dim,
            qk_norm=True, norm_eps=eps, causal=config.causal, backend=config.backend, scale=1.0,
            sliding_window=None if full else config.sliding_window, k_eq_v=config.k_eq_v and full, v_norm=True,
            kv_store=store, kv_reuse=reuse,
        )
        self.norm1, self.post_attn_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.norm2, self.post_mlp_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        wide = 2 if config.double_wide_mlp and reuse is not None else 1
        self.mlp = SwiGLU(dim, config.mlp_hidden * wide, activation="gelu_tanh")
        self.moe = None
        if config.num_experts:
            moe = MoEConfig(dim, config.num_experts, config.top_k, config.expert_hidden, activation="gelu_tanh")
            self.moe = MoE(moe, router=ScaledNormRouter(dim, config.num_experts, config.top_k, eps=eps))
            self.post_mlp_norm1, self.pre_moe_norm, self.post_moe_norm = (RMSNorm(dim, eps) for _ in range(3))
        self.per_layer = PerLayerBranch(dim, config.per_layer_dim, eps) if config.per_layer_dim else None
        self.register_buffer("layer_scalar", torch.ones(1))

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor],
        per_layer_input: torch.Tensor | None = None,
        shared_kv: dict[str, Any] | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """``x (B, T, dim)``, ``rope`` of this layer's type, ``per_layer_input (B, T, per_layer_dim)``."""
        h = x + self.post_attn_norm(self.attn(
            self.norm1(x), rope=rope, key_padding_mask=key_padding_mask, attention_mask=attention_mask,
            causal=causal, shared_kv=shared_kv,
        ))
        m = self.mlp(self.norm2(h))
        if self.moe is not None:
            m = self.post_mlp_norm1(m) + self.post_moe_norm(self.moe(self.pre_moe_norm(h), route_input=h))
        y = h + self.post_mlp_norm(m)
        if self.per_layer is not None:
            y = y + self.per_layer(y, per_layer_input)
        return y * self.layer_scalar.to(y.dtype)


class Gemma4Decoder(BlockStack):
    """The blocks, their two rotary tables (sliding, full) and the final norm.
    ``forward(x (B, T, dim), per_layer_inputs (B, T, depth, per_layer_dim) | None) -> (B, T, dim)``."""

    def __init__(self, config: Gemma4Config) -> None:
        types = config.types()
        if len(types) != config.depth or set(types) - set(LAYER_TYPES):
            raise OmnikitValueError(
                f"`layer_types` expected {config.depth} entries of {LAYER_TYPES} but got {config.layer_types}"
            )
        super().__init__((Gemma4Block(config, i) for i in range(config.depth)), RMSNorm(config.dim, config.norm_eps))
        self.config = config
        self.rotary = nn.ModuleDict({
            "sliding": RotaryEmbedding(config.head_dim, config.rope_base),
            "full": RotaryEmbedding(config.global_head_dim or config.head_dim, config.global_rope_base,
                                    fraction=config.global_rotary_fraction),
        })

    def forward(
        self,
        x: torch.Tensor,
        per_layer_inputs: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sliding_attention_mask: torch.Tensor | None = None,
        sliding_causal: bool | None = None,
    ) -> torch.Tensor:
        """``attention_mask`` (bool, broadcastable to ``(B, H, T, S)``) goes to full layers;
        ``sliding_attention_mask`` to sliding layers (default: ``attention_mask``), which run causal
        unless ``sliding_causal=False`` (the mask then says what is visible, the window still applies)."""
        check_tensor(x, "x", shape=("B", "T", self.config.dim), floating=True)
        if positions is None:
            positions = _default_positions(x.shape[1], self.cache_position, None, x.device)
        ropes = {name: rotary(positions) for name, rotary in self.rotary.items()}
        masks = {"full": attention_mask,
                 "sliding": attention_mask if sliding_attention_mask is None else sliding_attention_mask}
        causal = {"full": None, "sliding": sliding_causal}
        shared_kv: dict[str, Any] = {}

        def kwargs_for(block: nn.Module) -> dict[str, Any]:
            return dict(
                rope=ropes[block.layer_type], shared_kv=shared_kv, key_padding_mask=key_padding_mask,
                attention_mask=masks[block.layer_type], causal=causal[block.layer_type],
                per_layer_input=None if per_layer_inputs is None else per_layer_inputs[:, :, block.index],
            )

        x, _ = run_blocks(self.blocks, x, kwargs_for, checkpointing=self.gradient_checkpointing and self.training,
                          return_aux=False)
        return self.norm(x)


class Gemma4LM(TokenLM, StreamingContainer, nn.Module):
    """``input_ids (B, T) -> logits (B, T, vocab_size)``, KV-cached ``generate`` (from :class:`TokenLM`).

    Weights: ``embed``, ``decoder`` (:class:`Gemma4Decoder`), ``ple`` (:class:`PerLayerEmbedding`,
    with ``per_layer_dim``), ``lm_head`` (tied to ``embed`` by default).
    """

    supports_streaming = True
    stream_chunk = 3

    def __init__(self, config: Gemma4Config) -> None:
        super().__init__()
        for name in ("dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "vocab_size"):
            check_positive(getattr(config, name), name)
        check_choice(config.backend, "backend", ("sdpa", "eager", "flex", "flash", "auto"))
        if config.num_experts and not (config.top_k and config.expert_hidden):
            raise OmnikitValueError("a MoE (`num_experts` > 0) needs `top_k` and `expert_hidden` > 0")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.decoder = Gemma4Decoder(config)
        self.ple = None
        if config.per_layer_dim:
            self.ple = PerLayerEmbedding(config.per_layer_vocab or config.vocab_size, config.dim, config.depth,
                                         config.per_layer_dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings ``(B, T, dim)``: ``embed(ids) * sqrt(dim)`` (the scale in the weights' dtype)."""
        return self.embed(input_ids) * torch.tensor(self.config.dim**0.5, dtype=self.embed.weight.dtype)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``lm_head`` then the final softcap ``c * tanh(logits / c)``."""
        logits = self.lm_head(hidden)
        cap = self.config.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def run(
        self, input_ids: torch.Tensor | None, embeds: torch.Tensor, *, logits_to_keep: int = 0, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and final hidden states of input embeddings ``embeds (B, T, dim)`` (``input_ids``:
        the ids the per-layer embeddings read; None where they are media). ``logits_to_keep``: see
        :meth:`kept_for_logits`; ``kwargs``: see :meth:`Gemma4Decoder.forward`."""
        per_layer = None if self.ple is None else self.ple(input_ids, embeds)
        hidden = self.decoder(embeds, per_layer, **kwargs)
        return self.logits(self.kept_for_logits(hidden, logits_to_keep)), hidden

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``input_ids (B, T)``; ``positions (B, T)`` / ``(T,)``; ``key_padding_mask (B, S)`` bool, True
        on valid keys (S: cached + T when streaming). Returns logits ``(B, T, vocab)`` (and hidden;
        ``logits_to_keep``: the last this many positions' logits only, see :meth:`kept_for_logits`)."""
        self.check_ids(input_ids)
        logits, hidden = self.run(input_ids, self.embed_tokens(input_ids), positions=positions,
                                  key_padding_mask=key_padding_mask, logits_to_keep=logits_to_keep)
        return (logits, hidden) if return_hidden else logits

    def decode_step(
        self, tokens: torch.Tensor, *, positions: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One generated token per item inside an open stream: ``tokens (B, 1)`` -> logits, hidden."""
        return self.run(tokens, self.embed_tokens(tokens), positions=positions, key_padding_mask=key_padding_mask)
