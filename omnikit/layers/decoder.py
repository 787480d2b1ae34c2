"""Pre-norm decoder block and decoder stack (Llama / Qwen3 layout).

``block(x)`` alone is causal self-attention over positions ``0..T-1`` followed by the MLP::

    h = x + attn(norm1(x), rope(positions))
    y = h + mlp(norm2(h))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnikit.layers.attention import Attention
from omnikit.layers.masks import positions_from_cu_seqlens
from omnikit.layers.mlp import MLPKind, build_mlp
from omnikit.layers.norm import NormKind, build_norm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerShape
from omnikit.utils.checks import OmnikitValueError, check_tensor
from omnikit.utils.parallel import ParallelPlan

__all__ = [
    "BlockStack", "CachedPositions", "Decoder", "DecoderBlock", "DecoderConfig", "default_mlp_hidden", "mlp_residual",
    "run_blocks",
]


def default_mlp_hidden(dim: int, multiple_of: int = 64) -> int:
    """SwiGLU width with the parameter count of a 4x GELU MLP: ``8/3 * dim`` rounded up."""
    return multiple_of * ((8 * dim // 3 + multiple_of - 1) // multiple_of)


@dataclass
class DecoderConfig(TransformerShape):
    """Hyper-parameters of a decoder stack (and of the language models built on it): its
    :class:`~omnikit.layers.transformer_config.TransformerShape` sizes, then the decoder's options.

    Its defaults are the defaults of :class:`DecoderBlock` too (one set: Qwen3's qk-norm and rotary base).
    ``rotary_dim`` (partial rotary) and ``attn_output_gate`` are the Qwen3-Next / Qwen3.5 attention
    options (see :class:`DecoderBlock`); ``norm="rmsnorm_zero_centered"`` their ``1 + w`` norms.
    """

    mlp: MLPKind = "swiglu"
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-6
    qk_norm: bool = True
    qkv_bias: bool = False
    rope_base: float = 1_000_000.0
    mrope_sections: tuple[int, int, int] | None = None
    mrope_interleaved: bool = False
    sliding_window: int | None = None
    attention_chunk: int | None = None
    backend: str = "sdpa"
    vocab_size: int | None = None
    tie_embeddings: bool = False
    out_bias: bool = False
    rotary_dim: int | None = None
    attn_output_gate: bool = False


#: The defaults :class:`DecoderBlock` shares with :class:`DecoderConfig`.
_DEFAULTS = DecoderConfig(dim=1, depth=1, num_heads=1)


class DecoderBlock(nn.Module):
    """One pre-norm transformer block. Shapes: ``(B, T, dim) -> (B, T, dim)``.

    Args:
        dim: model width.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention; default ``num_heads``).
        head_dim: per-head width (default ``dim // num_heads``).
        mlp_hidden: SwiGLU/GELU hidden width (default ``8/3 * dim``).
        mlp: ``"swiglu"``, ``"gelu"``, or any module mapping ``(..., dim) -> (..., dim)``
            (a MoE layer, an adapter ...).
        norm: ``"rmsnorm"``, ``"rmsnorm_zero_centered"`` (``1 + weight``; the q/k norms follow) or
            ``"layernorm"``.
        norm_eps: epsilon of both norms.
        qk_norm: RMS-normalise queries and keys per head (default on, as in :class:`DecoderConfig`).
        qkv_bias: bias on the fused q/k/v projection.
        out_bias: bias on the attention output projection.
        rope_base: rotary base of the block's own rotary table (default ``1e6``, as in :class:`DecoderConfig`).
        mrope_sections: ``(t, h, w)`` frequency counts to make the block's rotary M-RoPE.
        mrope_interleaved: interleaved (Qwen3-Omni) instead of contiguous M-RoPE split.
        sliding_window: attend to at most this many most recent positions.
        attention_chunk: chunked attention: attend only within blocks of this many positions.
        backend: attention kernel (see :func:`scaled_dot_product`).
        rotary: a shared :class:`RotaryEmbedding`; by default the block owns a 1-D one
            (``rope_base``) or an M-RoPE one (``mrope_sections``). ``use_rope=False`` disables rotary.
        causal: causal self-attention (default) or bidirectional.
        post_norm: normalise after each residual sum instead of before each sublayer (BERT / wav2vec 2.0
            base): ``h = norm1(x + attn(x))``, ``y = norm2(h + mlp(h))``.
        rotary_dim: rotate only the first ``rotary_dim`` dims of each head (partial rotary; the
            block's own table, or the shared ``rotary``'s width).
        output_gate: sigmoid output gate per head, projected with the query (see :class:`Attention`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        mlp_hidden: int | None = None,
        mlp: MLPKind | nn.Module = _DEFAULTS.mlp,
        norm: NormKind = _DEFAULTS.norm,
        norm_eps: float = _DEFAULTS.norm_eps,
        qk_norm: bool = _DEFAULTS.qk_norm,
        qkv_bias: bool = _DEFAULTS.qkv_bias,
        out_bias: bool = False,
        rope_base: float = _DEFAULTS.rope_base,
        mrope_sections: tuple[int, int, int] | None = None,
        mrope_interleaved: bool = False,
        rotary: RotaryEmbedding | None = None,
        use_rope: bool = True,
        sliding_window: int | None = None,
        attention_chunk: int | None = None,
        backend: str = _DEFAULTS.backend,
        causal: bool = True,
        post_norm: bool = False,
        rotary_dim: int | None = None,
        output_gate: bool = False,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.attn = Attention(
            dim, num_heads, num_kv_heads, head_dim, qk_norm=qk_norm, norm_eps=norm_eps, qkv_bias=qkv_bias,
            out_bias=out_bias, causal=causal, sliding_window=sliding_window, chunk_size=attention_chunk,
            backend=backend, output_gate=output_gate, zero_centered_qk_norm=norm == "rmsnorm_zero_centered",
        )
        self.norm1 = build_norm(norm, dim, norm_eps)
        self.norm2 = build_norm(norm, dim, norm_eps)
        self.mlp = mlp if isinstance(mlp, nn.Module) else build_mlp(mlp, dim, mlp_hidden or default_mlp_hidden(dim))
        if use_rope and rotary is None:
            rotary = RotaryEmbedding(
                self.attn.head_dim, rope_base, sections=mrope_sections, interleaved=mrope_interleaved,
                rotary_dim=rotary_dim,
            )
        self.rotary = rotary if use_rope else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        causal: bool | None = None,
        return_aux: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Args:
        x: ``(B, T, dim)``.
        positions: ``(B, T)`` / ``(T,)`` ids, or ``(3, B, T)`` for M-RoPE; default
            ``cache_position + arange(T)``, restarting at 0 for every packed sequence of ``cu_seqlens``.
        rope: precomputed ``(cos, sin)`` (a stack computes them once for all blocks).
        key_padding_mask, attention_mask, cu_seqlens, causal: see :meth:`Attention.forward`.
        return_aux: also return the MLP's auxiliary output (a MoE layer's ``MoEAux``; ``None``
            for an MLP without one), as ``(y, aux)``.
        """
        if rope is None and self.rotary is not None:
            if positions is None:
                check_tensor(x, "x", ndim=3)
                positions = _default_positions(x.shape[1], self.attn.cache_position, cu_seqlens, x.device)
            rope = self.rotary(positions)
        h = x + self.attn(
            x if self.post_norm else self.norm1(x), rope=rope, key_padding_mask=key_padding_mask,
            attention_mask=attention_mask, cu_seqlens=cu_seqlens, causal=causal,
        )
        if not self.post_norm:
            return mlp_residual(h, self.norm2, self.mlp, return_aux)
        h = self.norm1(h)
        out = mlp_residual(h, nn.Identity(), self.mlp, return_aux)
        return (self.norm2(out[0]), out[1]) if return_aux else self.norm2(out)


def _default_positions(
    length: int, start: int | torch.Tensor, cu_seqlens: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """``start + arange(length)`` (``start`` a static cache's 0-dim position tensor, or an int), or
    per-sequence positions of a packed batch."""
    if cu_seqlens is not None:
        return positions_from_cu_seqlens(cu_seqlens, length)
    if isinstance(start, torch.Tensor):
        return start + torch.arange(length, device=device)
    return torch.arange(start, start + length, device=device)


def mlp_residual(
    h: torch.Tensor, norm: nn.Module, mlp: nn.Module, return_aux: bool
) -> torch.Tensor | tuple[torch.Tensor, Any]:
    """``h + mlp(norm(h))``; with ``return_aux`` also the MLP's auxiliary output (``None`` when it has
    none; a MoE layer declares ``returns_aux = True``)."""
    if not return_aux:
        return h + mlp(norm(h))
    if getattr(mlp, "returns_aux", False):
        out, aux = mlp(norm(h), return_aux=True)
        return h + out, aux
    return h + mlp(norm(h)), None


MLPFactory = Callable[[int], nn.Module]


def run_blocks(
    blocks: Iterable[nn.Module],
    x: torch.Tensor,
    kwargs_for: Callable[[nn.Module], dict[str, Any]],
    *,
    checkpointing: bool,
    return_aux: bool,
) -> tuple[torch.Tensor, list[Any]]:
    """Apply ``blocks`` in order, each called as ``block(x, **kwargs_for(block))``.

    With ``checkpointing`` (and autograd recording) each block is recomputed in backward. With
    ``return_aux`` every block is called with ``return_aux=True`` and returns ``(x, aux)``; the
    auxes come back in block order (an empty list otherwise).
    """
    auxes: list[Any] = []
    recompute = checkpointing and torch.is_grad_enabled()
    for block in blocks:
        kwargs = {**kwargs_for(block), "return_aux": True} if return_aux else kwargs_for(block)
        x = checkpoint(block, x, use_reentrant=False, **kwargs) if recompute else block(x, **kwargs)
        if return_aux:
            x, aux = x
            auxes.append(aux)
    return x, auxes


class CachedPositions:
    """How many positions a decoder's open stream holds, the one way every caller asks it.

    A stack's blocks all see the same steps, so its first block's token mixer answers: an
    :class:`Attention` (``attn``: its KV cache) or a linear-attention mixer (``mixer``: the steps its
    fixed-size state has absorbed). Mixed in by :class:`BlockStack` and the hybrid decoder.
    """

    blocks: nn.ModuleList

    def _position_mixer(self) -> nn.Module:
        block = self.blocks[0]
        mixer = getattr(block, "attn", None)
        return mixer if mixer is not None else block.mixer

    @property
    def cache_length(self) -> int:
        """Positions the open stream has cached (0 outside a stream; a host sync for a static cache)."""
        return self._position_mixer().cache_length

    @property
    def cache_position(self) -> int | torch.Tensor:
        """Position of the next step: :attr:`cache_length`, or for a static cache its 0-dim position
        tensor (no host sync, so traced code stays shape-static)."""
        return self._position_mixer().cache_position


class BlockStack(CachedPositions, nn.Module):
    """Blocks applied in order, then an optional final norm: the one stack the library's encoders and
    decoders are made of (:class:`Decoder`, :class:`~omnikit.layers.stack.TransformerStack`, the audio
    encoders' ``EncoderStack``). ``(B, T, dim) -> (B, T, dim)``.

    ``run(x, kwargs, extra)`` calls every block with ``kwargs`` and the blocks that declare
    ``takes_block_kwargs = True`` (a :class:`~omnikit.fusion.FusionLayer`, say) with ``extra`` too.
    Set ``gradient_checkpointing = True`` to recompute blocks in backward.
    """

    def __init__(self, blocks: Iterable[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm
        self.gradient_checkpointing = False

    def parallel_plan(self) -> ParallelPlan:
        """Every block is an FSDP unit."""
        return ParallelPlan(fsdp_units=list(self.blocks))

    def run(
        self,
        x: torch.Tensor,
        kwargs: dict[str, Any],
        extra: dict[str, Any] | None = None,
        *,
        return_aux: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[Any]]:
        """The blocks then the norm; with ``return_aux`` also one auxiliary output per block."""
        extended = {**kwargs, **extra} if extra else kwargs
        x, auxes = run_blocks(
            self.blocks, x, lambda block: extended if getattr(block, "takes_block_kwargs", False) else kwargs,
            checkpointing=self.gradient_checkpointing and self.training, return_aux=return_aux,
        )
        if self.norm is not None:
            x = self.norm(x)
        return (x, auxes) if return_aux else x


class Decoder(BlockStack):
    """A :class:`BlockStack` of :class:`DecoderBlock` with one shared rotary table and a final norm.

    ``forward(x: (B, T, dim)) -> (B, T, dim)``. ``mlp_factory(layer_index)`` may supply each
    block's MLP (MoE layers every other block, say); otherwise ``config.mlp`` is used.
    Set ``gradient_checkpointing = True`` to recompute blocks in backward.
    """

    def __init__(self, config: DecoderConfig, mlp_factory: MLPFactory | None = None) -> None:
        if config.depth < 1:
            raise OmnikitValueError(f"`depth` expected an int >= 1 but got {config.depth}")
        head_dim = config.head_dim or config.dim // config.num_heads
        rotary = RotaryEmbedding(
            head_dim, config.rope_base, sections=config.mrope_sections, interleaved=config.mrope_interleaved,
            rotary_dim=config.rotary_dim,
        )
        super().__init__((
            DecoderBlock(
                config.dim, config.num_heads, config.num_kv_heads, config.head_dim,
                mlp_hidden=config.mlp_hidden,
                mlp=mlp_factory(i) if mlp_factory is not None else config.mlp,
                norm=config.norm, norm_eps=config.norm_eps, qk_norm=config.qk_norm, qkv_bias=config.qkv_bias,
                out_bias=config.out_bias,
                rotary=rotary, sliding_window=config.sliding_window, attention_chunk=config.attention_chunk,
                backend=config.backend, output_gate=config.attn_output_gate,
            )
            for i in range(config.depth)
        ), build_norm(config.norm, config.dim, config.norm_eps))
        self.config = config
        self.rotary = rotary

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        causal: bool | None = None,
        return_aux: bool = False,
        block_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[Any]]:
        """``x: (B, T, dim) -> (B, T, dim)``; arguments as in :meth:`DecoderBlock.forward`.

        ``block_kwargs`` go, as extra keyword arguments, to the blocks that declare
        ``takes_block_kwargs = True`` (e.g. ``media`` for blocks wrapped in a fusion layer).

        With ``return_aux=True`` returns ``(y, auxes)``: one auxiliary output per block (``None``
        for blocks whose MLP has none), e.g. to sum MoE load-balancing losses.
        """
        check_tensor(x, "x", shape=("B", "T", self.config.dim), floating=True)
        if positions is None:
            positions = _default_positions(x.shape[1], self.cache_position, cu_seqlens, x.device)
        rope = self.rotary(positions)
        kwargs = dict(rope=rope, key_padding_mask=key_padding_mask, attention_mask=attention_mask,
                      cu_seqlens=cu_seqlens, causal=causal)
        return self.run(x, kwargs, block_kwargs, return_aux=return_aux)
