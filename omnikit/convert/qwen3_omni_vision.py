"""The Qwen3-Omni vision tower's maps: ``Qwen3OmniMoeVisionEncoder`` -> :class:`omnikit.vision.Qwen3ViT`.

Only renames (:data:`VISION_KEYS`); :func:`vision_config` translates the config (registered in
:mod:`omnikit.convert.hub_qwen3_omni`). :data:`TOWER_KEYS` and :data:`TOWER` are the parts every
Qwen3-VL-style tower shares (the Qwen3.5 tower, :mod:`omnikit.convert.hub_qwen3_5_vl`, names its merger
otherwise and has no deepstack mergers).
"""

from __future__ import annotations

from typing import Any

from omnikit.convert.configmap import ConfigMap, Constant, Convert, Field, Refuse
from omnikit.convert.keymap import KeyMap, Rename
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.qwen3_vit import Qwen3ViTConfig

__all__ = ["TOWER", "TOWER_KEYS", "VISION_KEYS", "vision_config"]

#: The patch embedding, position table and blocks every Qwen3-VL-style tower names alike (Qwen3-Omni, Qwen3.5).
TOWER_KEYS = KeyMap((
    Rename("embed.proj.{p}", "patch_embed.proj.{p}"),
    Rename("pos_embed.weight", "pos_embed.weight"),
    Rename("blocks.{i}.norm{n}.{p}", "blocks.{i}.norm{n}.{p}"),
    Rename("blocks.{i}.attn.qkv.{p}", "blocks.{i}.attn.qkv.{p}"),
    Rename("blocks.{i}.attn.out.{p}", "blocks.{i}.attn.proj.{p}"),
    Rename("blocks.{i}.mlp.fc{n}.{p}", "blocks.{i}.mlp.linear_fc{n}.{p}"),
))

#: omnikit key <- transformers key (relative to the tower, ``thinker.visual.`` in a checkpoint).
VISION_KEYS = TOWER_KEYS + KeyMap((
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


#: What every Qwen3-VL-style ``vision_config`` holds (transformers' defaults for absent keys), deepstack aside.
TOWER = ConfigMap((
    Refuse("hidden_act", ("gelu_pytorch_tanh",), label="vision_config.hidden_act"),
    Field("dim", "hidden_size", 1152), Field("depth", "depth", 27), Field("num_heads", "num_heads", 16),
    Field("mlp_hidden", "intermediate_size", 4304), Field("out_dim", "out_hidden_size", 3584),
    Convert("patch", ("temporal_patch_size", "patch_size"),
            lambda t, p, f: (_square(t, "temporal_patch_size"), _square(p, "patch_size"), _square(p, "patch_size")),
            lambda v, f: v[:2], (2, 16)),
    Field("in_chans", "in_channels", 3), Field("merge_size", "spatial_merge_size", 2),
    Field("num_position_embeddings", "num_position_embeddings", 2304),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float),
), target=Qwen3ViTConfig)

#: The :class:`~omnikit.vision.Qwen3ViTConfig` of a Qwen3-Omni ``vision_config`` dict (with its deepstack mergers).
vision_config = TOWER + ConfigMap((
    Field("deepstack_indexes", "deepstack_visual_indexes", (8, 16, 24), lambda v: tuple(int(i) for i in v)),
    Constant("model_type", "qwen3_omni_moe_vision_encoder"),
))
