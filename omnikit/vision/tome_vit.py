"""Token merging inside a timm ViT (ToMe, Bolya et al., 2023): ``r`` patch tokens fewer after every block.

Each block runs its own attention with *proportional attention* (the logit of a key that stands
for ``s`` patches gets ``+log s``, so a merged token draws the attention of the patches it
replaced), then merges ``r`` pairs of patch tokens by bipartite matching on the block's attention
keys (averaged over heads) with :func:`omnikit.layers.tome.merge_tokens`, then runs its MLP on the
shorter sequence. The attention is timm ``Attention``'s fused path run from its parts, so that it
also returns the keys (no hooks): the whole loop compiles with ``fullgraph=True`` and exports, its
merge rounds fixed by the patch count and ``r``. Prefix tokens (CLS, registers) never merge. The
ViT's weights are used as they are (ToMe needs no training); with ``r = 0`` the result is the ViT's
``forward_features``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnikit.layers.tome import merge_tokens
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive, check_tensor

__all__ = ["ToMeFeatures", "check_tome_backbone", "tome_forward_features"]

_VIT_PARTS = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm")
_BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
_ATTENTION_PARTS = ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop", "num_heads", "head_dim")


@dataclass
class ToMeFeatures:
    """Output of :func:`tome_forward_features`.

    Attributes:
        tokens: ``(N, P + K, D)`` final-norm tokens: ``P`` prefix tokens, then ``K`` merged patch
            tokens in the order of the patches they cover.
        sizes: ``(N, P + K)`` patches each token stands for (``1`` for prefix tokens); the patch
            part sums to the number of patches.
    """

    tokens: torch.Tensor
    sizes: torch.Tensor


def _check_vit_blocks(vit: nn.Module) -> None:
    """Raise unless ``vit`` has the timm ``VisionTransformer`` parts the ToMe block loop runs."""
    missing = [name for name in _VIT_PARTS if not hasattr(vit, name)]
    for block in getattr(vit, "blocks", []):
        missing += [f"blocks[i].{name}" for name in _BLOCK_PARTS if not hasattr(block, name)]
        attn = getattr(block, "attn", None)
        missing += [f"blocks[i].attn.{name}" for name in _ATTENTION_PARTS if not hasattr(attn, name)]
    if missing:
        raise OmnikitTypeError(
            f"`tome_r` needs a timm VisionTransformer-style backbone (ViT, DeiT, DINOv2) but "
            f"{type(vit).__name__} lacks {sorted(set(missing))}"
        )


def check_tome_backbone(vit: nn.Module, r: int) -> None:
    """Raise unless ``r >= 0`` and, for ``r > 0``, ``vit`` is a timm ``VisionTransformer``-like model
    whose blocks can merge tokens. ``r = 0`` (no merging) accepts any backbone."""
    check_positive(r, "tome_r", allow_zero=True)
    if r:
        _check_vit_blocks(vit)


def _check_patch_budget(r: int, depth: int, num_patches: int) -> None:
    """Raise unless ``depth`` blocks merging ``r`` each leave at least one of ``num_patches`` patch tokens."""
    if num_patches - depth * r < 1:
        raise OmnikitValueError(
            f"`tome_r`={r} merges {depth * r} tokens over {depth} blocks but frames have only {num_patches} patches"
        )


def _merge_patches(
    x: torch.Tensor, sizes: torch.Tensor, keys: torch.Tensor, r: int, num_prefix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``r`` patch tokens of ``x (N, L, D)`` by key similarity; prefix tokens stay first, untouched."""
    merged = merge_tokens(
        x[:, num_prefix:], x.shape[1] - num_prefix - r, sizes=sizes[:, num_prefix:], metric=keys[:, num_prefix:]
    )
    return torch.cat([x[:, :num_prefix], merged.tokens], 1), torch.cat([sizes[:, :num_prefix], merged.sizes], 1)


def _attention_with_keys(
    attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention.forward(x, attn_mask=bias)`` (the fused path: SDPA) that also returns its
    normalised keys: ``x (N, L, D) -> (N, L, D)`` and keys ``(N, heads, L, head_dim)``."""
    batch, length, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    out = attn.norm(out.transpose(1, 2).reshape(batch, length, attn.num_heads * attn.head_dim))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), k


def _tome_block(
    block: nn.Module, x: torch.Tensor, sizes: torch.Tensor | None, r: int, num_prefix: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One timm ``Block`` with proportional attention and ``r`` merges between attention and MLP.

    ``sizes`` ``(N, L)`` or ``None`` while nothing has merged yet (all ones: no attention bias).
    """
    bias = None if sizes is None else sizes.log().to(x.dtype)[:, None, None, :]
    attended, keys = _attention_with_keys(block.attn, block.norm1(x), bias)
    x = x + block.drop_path1(block.ls1(attended))
    if r:
        sizes = x.new_ones(x.shape[:2]) if sizes is None else sizes
        x, sizes = _merge_patches(x, sizes, keys.mean(dim=1), r, num_prefix)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x)))), sizes


def tome_forward_features(vit: nn.Module, images: torch.Tensor, r: int) -> ToMeFeatures:
    """timm ``vit.forward_features(images)`` with ``r`` patch tokens merged in every block.

    Args:
        vit: a timm ``VisionTransformer`` (ViT, DeiT, DINOv2 with registers: pre-norm blocks
            whose attention has ``k_norm``); its weights are used as they are.
        images: ``(N, C, H, W)`` normalised images.
        r: patch tokens merged per block; the output keeps ``num_patches - depth * r`` of them.

    Returns:
        :class:`ToMeFeatures`: ``(N, P + num_patches - depth * r, D)`` tokens and their sizes.
    """
    check_tensor(images, "images", ndim=4, floating=True)
    check_positive(r, "tome_r", allow_zero=True)
    _check_vit_blocks(vit)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    num_prefix = int(getattr(vit, "num_prefix_tokens", 0))
    _check_patch_budget(r, len(vit.blocks), x.shape[1] - num_prefix)
    sizes = None
    recompute = bool(getattr(vit, "grad_checkpointing", False)) and torch.is_grad_enabled()
    for block in vit.blocks:
        if recompute:  # timm's set_grad_checkpointing, honoured block by block
            x, sizes = checkpoint(_tome_block, block, x, sizes, r, num_prefix, use_reentrant=False)
        else:
            x, sizes = _tome_block(block, x, sizes, r, num_prefix)
    return ToMeFeatures(vit.norm(x), x.new_ones(x.shape[:2]) if sizes is None else sizes)
