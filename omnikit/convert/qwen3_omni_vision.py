"""The Qwen3-Omni vision tower's maps: ``Qwen3OmniMoeVisionEncoder`` -> :class:`omnikit.vision.Qwen3ViT`.

Only renames (:data:`VISION_KEYS`); :func:`vision_config` translates the config (registered in
:mod:`omnikit.convert.hub_qwen3_omni`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnikit.convert.keymap import KeyMap, Rename
from omnikit.utils.checks import OmnikitValueError, check_choice
from omnikit.vision.qwen3_vit import Qwen3ViTConfig

__all__ = ["VISION_KEYS", "vision_config"]

#: omnikit key <- transformers key (relative to the tower, ``thinker.visual.`` in a checkpoint).
VISION_KEYS = KeyMap((
    Rename("embed.proj.{p}", "patch_embed.proj.{p}"),
    Rename("pos_embed.weight", "pos_embed.weight"),
    Rename("blocks.{i}.norm{n}.{p}", "blocks.{i}.norm{n}.{p}"),
    Rename("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),
    Rename("blocks.{i}.attn.out.{p}", "blocks.{i}.attn.proj.{p}"),
    Rename("blocks.{i}.mlp.fc{n}.{p}", "blocks.{i}.mlp.linear_fc{n}.{p}"),
    Rename("merger.norm.{p}", "merger.ln_q.{p}"),
    Rename("merger.mlp.{n}.{p}", "merger.mlp.{n}.{p}"),
    Rename("deepstack_mergers.{k}.norm.{p}", "merger_list.{k}.ln_q.{p}"),
    Rename("deepstack_mergers.{k}.mlp.{n}.{p}", "merger_list.{k}.mlp.{n}.{p}"),
))


def _square(value: Any, name: str) -> int:
    """A square patch size given as an int or a pair."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise OmnikitValueError(f"`{name}` expected a square size but got {value}")
        value = value[0]
    return int(value)


def vision_config(vision: Mapping[str, Any]) -> Qwen3ViTConfig:
    """The :class:`~omnikit.vision.Qwen3ViTConfig` of a ``vision_config`` dict (transformers' defaults
    for absent keys)."""
    check_choice(vision.get("hidden_act", "gelu_pytorch_tanh"), "vision_config.hidden_act", ("gelu_pytorch_tanh",))
    rope = vision.get("rope_parameters") or {}
    patch = _square(vision.get("patch_size", 16), "patch_size")
    return Qwen3ViTConfig(
        dim=vision.get("hidden_size", 1152), depth=vision.get("depth", 27), num_heads=vision.get("num_heads", 16),
        mlp_hidden=vision.get("intermediate_size", 4304), out_dim=vision.get("out_hidden_size", 3584),
        patch=(_square(vision.get("temporal_patch_size", 2), "temporal_patch_size"), patch, patch),
        in_chans=vision.get("in_channels", 3), merge_size=vision.get("spatial_merge_size", 2),
        num_position_embeddings=vision.get("num_position_embeddings", 2304),
        deepstack_indexes=tuple(int(i) for i in vision.get("deepstack_visual_indexes", (8, 16, 24))),
        rope_base=float(rope.get("rope_theta", 10000.0)),
    )
