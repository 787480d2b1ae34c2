"""Hybrid stack: Gated DeltaNet linear-attention blocks interleaved with full attention (Qwen3-Next).

With ``full_attention_interval = 4`` layers 3, 7, 11 ... are full (softmax) attention blocks and
the others linear attention, so three quarters of the layers keep a fixed-size state instead of
a growing KV cache. Any layer's MLP may be a MoE layer (``mlp_factory``).

Qwen3-Next / Qwen3.5 are this stack with the :class:`DecoderConfig` options ``norm=
"rmsnorm_zero_centered"``, ``rotary_dim`` (a quarter of the head), ``attn_output_gate`` and the Gated
DeltaNet ``linear_projection`` layout (``"fused"`` for Next, ``"split"`` for 3.5);
:class:`omnikit.models.CausalLM` built on a :class:`HybridConfig` adds the embeddings and LM head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from omnikit.layers.decoder import (
    DecoderBlock,
    DecoderConfig,
    _default_positions,
    default_mlp_hidden,
    mlp_residual,
    run_blocks,
)
from omnikit.layers.kv_cache import StaticKVCache
from omnikit.layers.linear_attention import GatedDeltaNet, ProjectionLayout
from omnikit.layers.mlp import build_mlp
from omnikit.layers.norm import NormKind, build_norm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.streaming import StreamingContainer
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_input, check_positive
from omnikit.utils.parallel import ParallelPlan

__all__ = ["HybridConfig", "HybridDecoder", "LinearAttentionBlock"]


@dataclass
class HybridConfig(DecoderConfig):
    """Hyper-parameters of a :class:`HybridDecoder`: a :class:`DecoderConfig` (its full-attention
    blocks: ``dim``, ``depth``, heads, ``mlp``, ``qk_norm``, ``rope_base`` ...) plus the linear ones.

    Attributes:
        linear_heads, linear_head_dim: Gated DeltaNet query/key heads and ``d_k``.
        linear_v_heads, linear_v_head_dim: Gated DeltaNet value heads and ``d_v``.
        full_attention_interval: every ``n``-th block (``i % n == n - 1``) is full attention.
        conv_size, chunk_size: Gated DeltaNet short-convolution kernel and chunk length.
        linear_backend: ``"auto"``, ``"torch"`` or ``"fla"``.
        linear_projection: Gated DeltaNet projection layout, ``"split"`` or ``"fused"`` (see
            :class:`GatedDeltaNet`).

    ``rope_base`` defaults to ``10000``; ``norm`` applies to every block norm, the final norm and
    the q/k norms (the DeltaNet's gated norm keeps a plain weight); sliding windows and attention
    chunks do not apply. A ``vocab_size`` makes :class:`omnikit.models.CausalLM` a hybrid LM.
    """

    rope_base: float = 10000.0
    linear_heads: int | None = None
    linear_head_dim: int | None = None
    linear_v_heads: int | None = None
    linear_v_head_dim: int | None = None
    full_attention_interval: int = 4
    conv_size: int = 4
    chunk_size: int = 64
    linear_backend: str = "auto"
    linear_projection: ProjectionLayout = "split"


class LinearAttentionBlock(nn.Module):
    """Pre-norm block with a :class:`GatedDeltaNet` mixer: ``h = x + mixer(norm1(x)); y = h + mlp(norm2(h))``."""

    def __init__(self, mixer: GatedDeltaNet, mlp: nn.Module, norm_eps: float = 1e-6,
                 norm: NormKind = "rmsnorm") -> None:
        super().__init__()
        self.mixer = mixer
        self.norm1 = build_norm(norm, mixer.dim, norm_eps)
        self.norm2 = build_norm(norm, mixer.dim, norm_eps)
        self.mlp = mlp

    def forward(
        self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None, return_aux: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """``x: (B, T, dim)``; ``key_padding_mask (B, T)``, ``cu_seqlens`` as in :meth:`GatedDeltaNet.forward`;
        ``return_aux`` as in :meth:`DecoderBlock.forward`."""
        h = x + self.mixer(self.norm1(x), key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens)
        return mlp_residual(h, self.norm2, self.mlp, return_aux)


class HybridDecoder(StreamingContainer, nn.Module):
    """Causal stack ``(B, T, dim) -> (B, T, dim)`` mixing linear and full attention blocks.

    ``mlp_factory(layer_index)`` may supply each block's MLP (a MoE layer, say). Streams with
    ``with model.streaming(B):`` (KV caches in the attention blocks, fixed-size states elsewhere).
    ``forward(x, return_aux=True)`` returns ``(y, auxes)`` like :class:`omnikit.layers.Decoder`.
    """

    supports_streaming = True
    stream_chunk = 4

    def __init__(self, config: HybridConfig, mlp_factory: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        check_positive(config.depth, "depth")
        check_positive(config.full_attention_interval, "full_attention_interval")
        self.config = config
        cfg = config
        head_dim = cfg.head_dim or cfg.dim // cfg.num_heads
        self.rotary = RotaryEmbedding(head_dim, cfg.rope_base, sections=cfg.mrope_sections,
                                      interleaved=cfg.mrope_interleaved, rotary_dim=cfg.rotary_dim)
        blocks: list[nn.Module] = []
        for i in range(cfg.depth):
            mlp = mlp_factory(i) if mlp_factory is not None else build_mlp(
                cfg.mlp, cfg.dim, cfg.mlp_hidden or default_mlp_hidden(cfg.dim)
            )
            if self.is_full_attention(i):
                blocks.append(DecoderBlock(
                    cfg.dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, mlp=mlp, qk_norm=cfg.qk_norm,
                    qkv_bias=cfg.qkv_bias, out_bias=cfg.out_bias, norm=cfg.norm, norm_eps=cfg.norm_eps,
                    rotary=self.rotary, backend=cfg.backend, output_gate=cfg.attn_output_gate,
                ))
            else:
                mixer = GatedDeltaNet(
                    cfg.dim, cfg.linear_heads or cfg.num_heads, cfg.linear_head_dim, num_v_heads=cfg.linear_v_heads,
                    v_head_dim=cfg.linear_v_head_dim, conv_size=cfg.conv_size, chunk_size=cfg.chunk_size,
                    norm_eps=cfg.norm_eps, backend=cfg.linear_backend, projection=cfg.linear_projection,
                )
                blocks.append(LinearAttentionBlock(mixer, mlp, cfg.norm_eps, cfg.norm))
        self.blocks = nn.ModuleList(blocks)
        self.norm = build_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.gradient_checkpointing = False

    def parallel_plan(self) -> ParallelPlan:
        """Every block is an FSDP unit."""
        return ParallelPlan(fsdp_units=list(self.blocks))

    def is_full_attention(self, index: int) -> bool:
        """Whether block ``index`` is a full-attention block."""
        interval = self.config.full_attention_interval
        return index % interval == interval - 1

    @property
    def output_dim(self) -> int:
        return self.config.dim

    def _first_attention(self) -> DecoderBlock | None:
        return next((b for b in self.blocks if isinstance(b, DecoderBlock)), None)

    def _linear_mask(self, mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """The padding mask of the ``length`` new steps, from a mask over every key the attention
        blocks see (a stream's cached keys too): its last columns, or none over a static cache's
        slots (the steps after its prompt are generated tokens)."""
        if mask is None or mask.shape[1] == length:
            return mask
        first = self._first_attention()
        if first is not None and isinstance(first.attn.streaming_state, StaticKVCache):
            return None
        return mask[:, -length:]

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        return_aux: bool = False,
        attention_mask: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[Any]]:
        """``x: (B, T, dim) -> (B, T, dim)`` (and one aux per block with ``return_aux=True``).

        ``positions``, ``key_padding_mask``, ``cu_seqlens`` as in :meth:`omnikit.layers.Decoder.forward`;
        the linear blocks zero padded steps and restart their state at every packed sequence.
        ``attention_mask`` and ``causal`` are accepted as a :class:`~omnikit.layers.Decoder` takes them
        (a :class:`~omnikit.fusion.Thinker` passes them) but only as ``None``: the recurrence is causal.
        """
        if attention_mask is not None or causal is False:
            raise OmnikitValueError(
                "HybridDecoder expected attention_mask=None and a causal stack (its linear-attention blocks "
                f"are recurrent) but got attention_mask={'a tensor' if attention_mask is not None else None}, "
                f"causal={causal}"
            )
        check_input(x, "x", self, shape=("B", "T", self.config.dim))
        if not x.shape[0]:
            raise OmnikitValueError(f"`x` expected at least one item but got shape {tuple(x.shape)}")
        if not x.shape[1]:  # no steps: nothing to mix (the short convolutions need at least one)
            return (self.norm(x), []) if return_aux else self.norm(x)
        if positions is None:
            first = self._first_attention()
            start = first.attn.cache_position if first is not None else 0
            positions = _default_positions(x.shape[1], start, cu_seqlens, x.device)
        rope = self.rotary(positions)
        attention = dict(rope=rope, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens)
        linear = dict(key_padding_mask=self._linear_mask(key_padding_mask, x.shape[1]), cu_seqlens=cu_seqlens)
        x, auxes = run_blocks(
            self.blocks, x, lambda block: attention if isinstance(block, DecoderBlock) else linear,
            checkpointing=self.gradient_checkpointing and self.training, return_aux=return_aux,
        )
        return (self.norm(x), auxes) if return_aux else self.norm(x)

    def contract_inputs(self, lengths: list[int], *, seed: int = 0) -> ContractInputs:
        """``x: (B, max(lengths), dim)`` right-padded; causal, so padding never reaches valid outputs."""
        if not lengths:
            raise OmnikitValueError("`lengths` expected at least one item")
        g = torch.Generator().manual_seed(seed)
        lengths_t = torch.as_tensor(list(lengths), dtype=torch.int64)
        x = torch.randn(len(lengths_t), int(lengths_t.max()), self.config.dim, generator=g)
        return ContractInputs({"x": x.to(self.norm.weight.device)}, lengths_t, {"x": 1}, None)
