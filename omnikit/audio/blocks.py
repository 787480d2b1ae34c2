"""Pieces shared by the audio encoders: the pre-LN transformer stack, sinusoidal positions, length masks.

The Whisper, Qwen2.5-Omni and Qwen3-Omni audio encoders all use the same block::

    h = x + attn(norm1(x))          # bidirectional, biased q/v/out projections
    y = h + mlp(norm2(h))           # fc1 -> exact GELU -> fc2

which is the foundation's :class:`~omnikit.layers.DecoderBlock` without rotary or causal mask,
with LayerNorms and a biased :class:`~omnikit.layers.GeluMLP` (see :func:`encoder_block`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers import DecoderBlock, GeluMLP
from omnikit.layers.decoder import BlockStack
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_lengths_or_full, check_tensor

__all__ = [
    "EncoderStack", "check_features", "encoder_block", "feature_contract_inputs", "on_valid_steps", "sinusoids",
    "zero_padding",
]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal table ``(length, channels)``: ``[sin(t * f_i), cos(t * f_i)]``.

    Frequencies are ``f_i = max_timescale ** (-i / (channels / 2 - 1))``, computed in float32 in
    the same order of operations as the reference so the table is bit-identical.
    """
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def check_features(
    features: object, lengths: object, n_mels: int, name: str = "features", lengths_name: str = "lengths",
    *, like: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``features (B, n_mels, T)`` and ``lengths (B,)``; returns both (lengths default to T).

    In eager mode the valid frames must be finite (NaN or inf in the padding is allowed: the
    encoders remove it by masking). ``like``: the encoder, whose weights' dtype the features must have.
    """
    x = check_tensor(features, name, shape=("B", n_mels, "T"), floating=True, like=like)
    for size, what in ((x.shape[0], "item"), (x.shape[-1], "frame")):
        if size == 0:
            raise OmnikitValueError(f"`{name}` expected at least one {what} but got shape {tuple(x.shape)}")
    n = check_lengths_or_full(lengths, x, axis=-1, name=lengths_name)
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(x.sum())):  # fast path: a finite sum
        finite = torch.isfinite(x).all(dim=1)  # means no NaN/inf anywhere; else look at the valid frames
        if lengths is not None:
            finite |= ~(torch.arange(x.shape[-1], device=x.device)[None, :] < n[:, None])
        if not bool(finite.all()):
            raise OmnikitValueError(f"`{name}` expected finite values but holds NaN or inf in valid frames")
    return x, n


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x (B, C, T)`` with every step ``t >= lengths[b]`` set to zero (no copy when nothing is padded)."""
    if not torch.compiler.is_compiling() and bool((lengths == x.shape[-1]).all()):
        return x  # eager shortcut; traced code always masks (no data-dependent branch)
    valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
    return x.masked_fill(~valid[:, None, :], 0)  # not a product: NaN in padding must not survive


def on_valid_steps(fn: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A step-wise ``fn`` (norm, projections) on ``h (B, T, D)``'s valid steps -> ``(B, T, D')``, padding zero.

    Eager: only the ``lengths (B,)`` valid steps are computed (short items in a batch with a long
    one leave most of ``B * T`` as padding). Traced: every step, then masked (fixed shapes).
    """
    valid = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
    if torch.compiler.is_compiling():
        out = fn(h)
        return out * valid[..., None].to(out.dtype)
    rows = fn(h[valid])
    return rows.new_zeros(*valid.shape, rows.shape[-1]).masked_scatter(valid[..., None], rows)


def encoder_block(dim: int, num_heads: int, mlp_hidden: int, *, norm_eps: float = 1e-5,
                  backend: str = "sdpa", post_norm: bool = False) -> DecoderBlock:
    """A pre-LN bidirectional transformer block ``(B, T, dim) -> (B, T, dim)`` (Whisper layout): a
    :class:`~omnikit.layers.DecoderBlock` with LayerNorms, biased attention and a biased GELU MLP, no
    rotary and no causal mask.

    Weights: ``attn.qkv`` (fused q/k/v, biased), ``attn.out``, ``norm1``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``.
    ``post_norm``: the norms follow the residual sums instead (wav2vec 2.0 base).
    """
    return DecoderBlock(
        dim, num_heads, mlp=GeluMLP(dim, mlp_hidden, bias=True), norm="layernorm", norm_eps=norm_eps,
        qk_norm=False, qkv_bias=True, out_bias=True, use_rope=False, causal=False, backend=backend,
        post_norm=post_norm,
    )


class EncoderStack(BlockStack):
    """A :class:`~omnikit.layers.decoder.BlockStack` of ``depth`` :func:`encoder_block` s (no final norm).
    Set ``gradient_checkpointing = True`` to recompute them in backward."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_hidden: int, *, norm_eps: float = 1e-5,
                 backend: str = "sdpa", post_norm: bool = False) -> None:
        super().__init__(
            encoder_block(dim, num_heads, mlp_hidden, norm_eps=norm_eps, backend=backend, post_norm=post_norm)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, T, dim) -> (B, T, dim)``; ``key_padding_mask (B, T)`` True on valid positions."""
        return self.run(x, {"key_padding_mask": key_padding_mask})

    def forward_ragged(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x (N, T, dim)`` independent windows, ``valid (N,)`` leading valid steps of each -> ``(N, T, dim)``.

        Eager: the valid steps of all windows are packed into one sequence ``(1, sum(valid), dim)`` and go
        through the blocks together, attention confined to each window (``cu_seqlens``), so no row of
        padding is computed (a batch of short mixed clips has many: the last window of every item) and
        every projection is one matmul; padded steps come back zero. Traced: one masked call (fixed shapes).
        """
        size = x.shape[1]
        steps = torch.arange(size, device=x.device)[None, :] < valid[:, None]
        if torch.compiler.is_compiling():
            return self(x, steps)
        if bool(steps.all()):
            return self(x)
        cu_seqlens = F.pad(valid.cumsum(0), (1, 0))
        out = self.run(x[steps][None], {"cu_seqlens": cu_seqlens})[0]
        return out.new_zeros(*x.shape[:2], out.shape[-1]).masked_scatter(steps[..., None], out)


def feature_contract_inputs(channels: int, lengths: Sequence[int], seed: int = 0, *, name: str = "features",
                            scale: float = 1.0) -> ContractInputs:
    """Contract batch for ``forward(<name> (B, channels, T), lengths)``: random values times ``scale``, zero padding.

    ``lengths`` is passed to the model only when the items differ in length (equal items need
    none, which is also how a stream is fed).
    """
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(list(lengths), dtype=torch.long)
    x = zero_padding(torch.randn(len(n), channels, int(n.max()), generator=g) * scale, n)
    kwargs: dict[str, torch.Tensor] = {name: x}
    ragged = bool((n != n.max()).any())
    if ragged:
        kwargs["lengths"] = n
    return ContractInputs(kwargs, n, {name: 2}, "lengths" if ragged else None)
