"""Video: loading, frame sampling, scene detection, temporal modules, long-video compression.

The heavy dependencies (PyAV, decord, matplotlib) are imported only when a function needs them.
"""

from omnikit.layers.tome import MergeResult, merge_by_assignment, merge_tokens
from omnikit.video import presets  # noqa: F401  (registers the temporal modules)
from omnikit.video.audio import frame_audio_energy, load_audio
from omnikit.video.backends import BACKENDS, VideoBackend, available_backends, open_video
from omnikit.video.budget import BudgetPlan, TokenSpec, plan_budget
from omnikit.video.clip import Clip, VideoInfo
from omnikit.video.hierarchy import HierarchicalSummarizer, HierarchyConfig, HierarchyOutput
from omnikit.video.load import STRATEGIES, load_video, sample_indices
from omnikit.video.memory import MemoryBank
from omnikit.video.packing import pack_groups
from omnikit.video.plot import plot_contact_sheet, plot_sampling
from omnikit.video.sampling import (
    density_indices,
    event_weights,
    fps_indices,
    keyframe_indices,
    scene_weights,
    uniform_indices,
)
from omnikit.video.scenes import detect_scenes, find_cuts
from omnikit.video.scores import FrameScores, compute_frame_scores
from omnikit.video.stream import encode_video_stream, iter_video_windows, stream_encode_video
from omnikit.video.temporal import (
    CrossAttention,
    FactorizedEncoder,
    PerceiverResampler,
    QFormer,
    SpaceTimeEncoder,
    TemporalPooling,
    TemporalTransformer,
)

__all__ = [
    "BACKENDS",
    "STRATEGIES",
    "BudgetPlan",
    "Clip",
    "CrossAttention",
    "FactorizedEncoder",
    "FrameScores",
    "HierarchicalSummarizer",
    "HierarchyConfig",
    "HierarchyOutput",
    "MemoryBank",
    "MergeResult",
    "PerceiverResampler",
    "QFormer",
    "SpaceTimeEncoder",
    "TemporalPooling",
    "TemporalTransformer",
    "TokenSpec",
    "VideoBackend",
    "VideoInfo",
    "available_backends",
    "compute_frame_scores",
    "density_indices",
    "detect_scenes",
    "encode_video_stream",
    "event_weights",
    "find_cuts",
    "fps_indices",
    "frame_audio_energy",
    "iter_video_windows",
    "keyframe_indices",
    "load_audio",
    "load_video",
    "merge_by_assignment",
    "merge_tokens",
    "open_video",
    "pack_groups",
    "plan_budget",
    "plot_contact_sheet",
    "plot_sampling",
    "sample_indices",
    "scene_weights",
    "stream_encode_video",
    "uniform_indices",
]
