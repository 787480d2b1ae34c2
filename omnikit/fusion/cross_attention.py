"""Cross-attention fusion (Flamingo / Llama-3.2-Vision): gated cross-attention layers inside a decoder.

- :class:`GatedCrossAttentionBlock`: text queries attend to media tokens, then a feed-forward;
  both residual branches are scaled by ``tanh(gate)`` with gates initialised to 0, so the wrapped
  language model computes exactly what it computed before fusion until the gates move.
- :class:`FusionLayer`: wraps an existing decoder block and runs the fusion block before it.
  Its state dict keeps the wrapped block's keys unchanged (``blocks.3.attn.qkv.weight``), so a
  text-only checkpoint loads into the fused model; the new weights live under ``fusion.``.
- :func:`media_attention_mask`: which media tokens each text token may see (those of items that
  appear at or before it, or only the latest such item).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from omnikit.layers.attention_backends import scaled_dot_product
from omnikit.layers.decoder import default_mlp_hidden
from omnikit.layers.mlp import build_mlp
from omnikit.layers.norm import RMSNorm, build_norm
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["FusionLayer", "GatedCrossAttentionBlock", "media_attention_mask", "with_fusion_layers"]


def media_attention_mask(
    media_offsets: torch.Tensor,
    query_positions: torch.Tensor,
    tokens_per_item: int,
    *,
    only_latest: bool = False,
) -> torch.Tensor:
    """``(B, 1, T, I * tokens_per_item)`` bool: text token at position ``p`` sees item ``i`` iff
    ``media_offsets[b, i] <= p`` (and, with ``only_latest``, ``i`` is the last such item).

    Args:
        media_offsets: ``(B, I)`` int, the text position where each media item appears
            (its marker token); ``-1`` marks a missing item (padding), never seen.
        query_positions: ``(T,)`` absolute positions of the text tokens.
        tokens_per_item: media tokens per item (the resampler's latents).
    """
    check_tensor(media_offsets, "media_offsets", ndim=2, floating=False)
    check_tensor(query_positions, "query_positions", ndim=1, floating=False)
    check_positive(tokens_per_item, "tokens_per_item")
    present = media_offsets >= 0
    seen = present[:, None, :] & (media_offsets[:, None, :] <= query_positions[None, :, None])  # (B, T, I)
    if only_latest:
        latest = (seen.long() * torch.arange(1, seen.shape[-1] + 1, device=seen.device)).argmax(-1, keepdim=True)
        seen = seen & (torch.arange(seen.shape[-1], device=seen.device) == latest)
    return seen.repeat_interleave(tokens_per_item, dim=-1)[:, None]


class GatedCrossAttentionBlock(nn.Module):
    """``x (B, T, dim)``, ``media (B, M, media_dim)`` -> ``(B, T, dim)``::

        h = x + tanh(attn_gate) * xattn(norm(x), media)
        y = h + tanh(ff_gate) * ff(ff_norm(h)) * sees_media

    where ``sees_media`` is 0 for the text tokens whose ``media_mask`` row is empty (they see no
    media item): such a token leaves the block exactly as it entered, whatever else is in the
    batch (Llama-3.2-Vision masks these rows the same way).

    Args:
        dim: text width.
        media_dim: width of the media tokens (keys/values are projected from it).
        num_heads: attention heads; ``head_dim`` defaults to ``dim // num_heads``.
        mlp_hidden: feed-forward width (default ``8/3 * dim``); ``mlp``: ``"swiglu"``/``"gelu"``.
        qk_norm: RMS-normalise queries and keys per head (Llama-3.2-Vision does).
    """

    def __init__(
        self,
        dim: int,
        media_dim: int,
        num_heads: int,
        *,
        head_dim: int | None = None,
        mlp_hidden: int | None = None,
        mlp: str = "swiglu",
        norm: str = "rmsnorm",
        qk_norm: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_positive(num_heads, "num_heads")
        head_dim = head_dim or dim // num_heads
        self.num_heads, self.head_dim, self.dim, self.media_dim = num_heads, head_dim, dim, media_dim
        self.norm = build_norm(norm, dim, norm_eps)
        self.q = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.kv = nn.Linear(media_dim, 2 * num_heads * head_dim, bias=False)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff_norm = build_norm(norm, dim, norm_eps)
        self.ff = build_mlp(mlp, dim, mlp_hidden or default_mlp_hidden(dim))
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
        x: ``(B, T, dim)`` text hidden states.
        media: ``(B, M, media_dim)`` media tokens.
        media_mask: ``(B, 1, T, M)`` bool from :func:`media_attention_mask` (None: see all).
        """
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        check_tensor(media, "media", shape=(x.shape[0], "M", self.media_dim), floating=True)
        batch, length, _ = x.shape
        q = self.q(self.norm(x)).view(batch, length, self.num_heads, self.head_dim)
        k, v = self.kv(media.to(x.dtype)).view(batch, media.shape[1], 2 * self.num_heads, self.head_dim).chunk(2, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if media_mask is not None:
            check_tensor(media_mask, "media_mask", shape=(batch, 1, length, media.shape[1]), dtype=torch.bool)
        attended = scaled_dot_product(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attention_mask=media_mask
        ).transpose(1, 2).reshape(batch, length, -1)
        # a text token that sees no media gets nothing from either branch: its attention rows are
        # empty (zeros, and ``out`` has no bias), and its feed-forward is masked out here, so it leaves
        # the block unchanged, as when a batch holds no media and the block does not run at all
        h = x + torch.tanh(self.attn_gate) * self.out(attended)
        ff = self.ff(self.ff_norm(h))
        if media_mask is not None:
            ff = ff * media_mask.any(-1).transpose(1, 2).to(ff.dtype)
        return h + torch.tanh(self.ff_gate) * ff


class FusionLayer(nn.Module):
    """Run ``fusion`` (media -> text) before an existing decoder ``layer``, keeping its state-dict keys.

    ``forward(x, *, media=None, media_mask=None, **layer_kwargs)``: without ``media`` this is
    exactly ``layer(x, **layer_kwargs)``. ``state_dict()`` holds ``layer``'s keys as if it were
    unwrapped plus ``fusion.*``; ``load_state_dict`` accepts the same layout.

    ``run_absent_media = True`` (set by :func:`omnikit.distributed.parallelize`): without
    ``media``, ``fusion`` still runs, on one zero media token, and its output enters times zero, so
    every data-parallel rank uses the same parameters (see :mod:`omnikit.fusion.absent`).
    """

    #: a :class:`~omnikit.layers.decoder.BlockStack` passes its ``block_kwargs`` (``media``, ``media_mask``) here.
    takes_block_kwargs = True

    def __init__(self, layer: nn.Module, fusion: nn.Module) -> None:
        super().__init__()
        if isinstance(layer, FusionLayer):
            raise OmnikitValueError("`layer` is already a FusionLayer; wrap the original layer once")
        self.layer = layer
        self.fusion = fusion
        self.run_absent_media = False
        self.register_state_dict_post_hook(FusionLayer._unwrap_keys)
        self.register_load_state_dict_pre_hook(FusionLayer._wrap_keys)

    @staticmethod
    def _unwrap_keys(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        inner = prefix + "layer."
        for key in [k for k in state if k.startswith(inner)]:
            state[prefix + key[len(inner):]] = state.pop(key)

    @staticmethod
    def _wrap_keys(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        fusion = prefix + "fusion."
        for key in [k for k in state if k.startswith(prefix) and not k.startswith((fusion, prefix + "layer."))]:
            state[prefix + "layer." + key[len(prefix):]] = state.pop(key)

    def __getattr__(self, name: str) -> Any:
        """An attribute not found here is ``layer``'s, so a state-dict key (``attn.qkv.weight``)
        resolves as an attribute path too, as ``torch.distributed.checkpoint``'s state-dict
        helpers (``get_model_state_dict``, used by omnikit.distributed's checkpoints) require."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module} (see :func:`omnikit.fusion.parameter_groups`): the fusion part is an adapter."""
        return {"adapters": self.fusion}

    def forward(
        self, x: torch.Tensor, *, media: torch.Tensor | None = None, media_mask: torch.Tensor | None = None,
        **layer_kwargs: Any,
    ) -> torch.Tensor:
        if media is not None:
            x = self.fusion(x, media, media_mask)
        elif self.run_absent_media:
            x = x + self.fusion(x, x.new_zeros(x.shape[0], 1, self.fusion.media_dim), None).sum() * 0
        return self.layer(x, **layer_kwargs)


def with_fusion_layers(lm: nn.Module, fusions: Mapping[int, nn.Module]) -> nn.Module:
    """A copy of the language model ``lm`` whose decoder block ``i`` is ``FusionLayer(block, fusions[i])``.

    ``lm`` itself is left as it was: only the module objects on the path ``lm -> decoder -> blocks``
    are new, every block and parameter is shared (not copied), so the state-dict keys stay those of
    ``lm`` plus ``...blocks.{i}.fusion.*``.
    """
    decoder = copy.copy(lm.decoder)
    decoder._modules = dict(decoder._modules)
    decoder.blocks = nn.ModuleList(
        FusionLayer(block, fusions[i]) if i in fusions else block for i, block in enumerate(lm.decoder.blocks)
    )
    fused = copy.copy(lm)
    fused._modules = dict(fused._modules)
    fused.decoder = decoder
    return fused
