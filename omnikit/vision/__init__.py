"""Vision: ViT frame encoders (timm backbones), patch mergers, ToMe inside ViT blocks, tubelet embeddings, grid rotary.

timm is imported only when a :class:`FrameEncoder` is built from a name.
"""

from omnikit.layers.stack import TransformerStack
from omnikit.vision import presets as _presets  # noqa: F401  (registers the frame encoders)
from omnikit.vision.frame_encoder import POOLS, FrameEncoder
from omnikit.vision.merger import PatchMerger, group_patches
from omnikit.vision.patch_grids import host_grids
from omnikit.vision.qwen3_vit import BlockPatchMerger, DeepstackOutput, Qwen3ViT, Qwen3ViTConfig
from omnikit.vision.rotary import AxialRotaryEmbedding, grid_positions
from omnikit.vision.tome_vit import ToMeFeatures, tome_forward_features
from omnikit.vision.tubelet import TubeletEmbed, repeat_last_valid_frame
from omnikit.vision.video_vit import VideoViT, VideoViTConfig
from omnikit.vision.window_vit import WindowViT, WindowViTConfig, patchify_frames, window_order

__all__ = [
    "POOLS",
    "AxialRotaryEmbedding",
    "BlockPatchMerger",
    "DeepstackOutput",
    "FrameEncoder",
    "PatchMerger",
    "Qwen3ViT",
    "Qwen3ViTConfig",
    "ToMeFeatures",
    "TransformerStack",
    "TubeletEmbed",
    "VideoViT",
    "VideoViTConfig",
    "WindowViT",
    "WindowViTConfig",
    "grid_positions",
    "group_patches",
    "host_grids",
    "patchify_frames",
    "repeat_last_valid_frame",
    "tome_forward_features",
    "window_order",
]
