"""``transformers`` ``Qwen3OmniMoeVisionEncoder`` -> :class:`omnikit.vision.Qwen3ViT`.

Only renames: :data:`VISION_KEYS` maps every transformers key of the tower (relative to
``thinker.visual.``) to the omnikit key; :func:`vision_config` translates the config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.convert import converter
from omnikit.convert.keys import rename_state
from omnikit.convert.whisper import build_converted
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = ["VISION_KEYS", "convert_qwen3_omni_vision", "vision_config"]

#: transformers key pattern -> omnikit key (``re.sub`` templates, anchored at both ends).
VISION_KEYS: tuple[tuple[str, str], ...] = (
    (r"patch_embed\.proj\.(weight|bias)", r"embed.proj.\1"),
    (r"pos_embed\.weight", r"pos_embed.weight"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.attn.out.\2"),
    (r"blocks\.(\d+)\.mlp\.linear_fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
    (r"merger\.ln_q\.(weight|bias)", r"merger.norm.\1"),
    (r"merger\.mlp\.([02])\.(weight|bias)", r"merger.mlp.\1.\2"),
    (r"merger_list\.(\d+)\.ln_q\.(weight|bias)", r"deepstack_mergers.\1.norm.\2"),
    (r"merger_list\.(\d+)\.mlp\.([02])\.(weight|bias)", r"deepstack_mergers.\1.mlp.\2.\3"),
)


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
    state = rename_state(hf_encoder.state_dict(), VISION_KEYS)
    return build_converted("qwen3_vit_omni_30b_a3b", hf_encoder, state, **vision_config(hf_encoder.config))
