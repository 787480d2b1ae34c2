"""``transformers`` ``Qwen3OmniMoeVisionEncoder`` -> :class:`omnikit.vision.Qwen3ViT`.

Only renames (:data:`VISION_KEYS`); :func:`vision_config` translates the config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.convert import converter
from omnikit.convert.keymap import KeyMap, Rename
from omnikit.convert.whisper import build_converted
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = ["VISION_KEYS", "convert_qwen3_omni_vision", "vision_config"]

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


def _pair(value: Any, name: str) -> int:
    """A square patch size given as an int or a pair."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise OmnikitValueError(f"`{name}` expected a square size but got {value}")
        value = value[0]
    return int(value)


def vision_config(config: Any) -> dict[str, Any]:
    """:class:`~omnikit.vision.Qwen3ViTConfig` fields from a ``Qwen3OmniMoeVisionEncoderConfig``."""
    if config.hidden_act != "gelu_pytorch_tanh":
        raise OmnikitValueError(
            f"vision hidden_act {config.hidden_act!r} is not supported; expected 'gelu_pytorch_tanh'"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    patch = _pair(config.patch_size, "patch_size")
    return dict(
        dim=config.hidden_size, depth=config.depth, num_heads=config.num_heads, mlp_hidden=config.intermediate_size,
        out_dim=config.out_hidden_size, patch=(_pair(config.temporal_patch_size, "temporal_patch_size"), patch, patch),
        in_chans=config.in_channels, merge_size=config.spatial_merge_size,
        num_position_embeddings=config.num_position_embeddings,
        deepstack_indexes=tuple(int(i) for i in config.deepstack_visual_indexes),
        rope_base=float(rope.get("rope_theta", 10000.0)),
    )


@converter("Qwen3OmniMoeVisionEncoder")
def convert_qwen3_omni_vision(hf_encoder: nn.Module) -> Qwen3ViT:
    """A :class:`Qwen3ViT` with ``hf_encoder``'s config and weights (merged tokens and deepstack
    features equal to transformers' ``pooler_output`` / ``deepstack_features``)."""
    return build_converted("qwen3_vit_omni_30b_a3b", hf_encoder, VISION_KEYS, **vision_config(hf_encoder.config))
