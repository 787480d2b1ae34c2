"""Omni assembly: early fusion, cross-attention fusion, TMRoPE, the Thinker.

The speech heads (Talker, duplex, turn-taking, Thinker-Talker) live in :mod:`omnikit.speech` and
sampling / generation in :mod:`omnikit.models`; their names stay importable from here.
"""

from omnikit.fusion import models, presets
from omnikit.fusion.adapters import (
    AdaptedMedia,
    AudioAdapter,
    MLPProjector,
    ResampledAdapter,
    TubeletEncoder,
    VideoAdapter,
    mlp_projector,
)
from omnikit.fusion.cross_attention import FusionLayer, GatedCrossAttentionBlock, media_attention_mask
from omnikit.fusion.deepstack_thinker import DeepstackThinker
from omnikit.fusion.early import PackedSequences, fusion_attention_mask, media_item_ids, pack_sequences, scatter_media
from omnikit.fusion.losses import text_lm_loss
from omnikit.fusion.modality import MEDIA_MODALITIES, MODALITIES, MediaTokens
from omnikit.fusion.omni import EarlyFusionOmni, FusedInputs
from omnikit.fusion.omni_speech import SpeakingOmni, SpeechOutput
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.qwen2_5_omni_speech import Qwen2_5OmniSpeech
from omnikit.fusion.qwen3_5_omni import QWEN3_5_OMNI, HybridOmniThinker, Qwen3_5OmniSpeech
from omnikit.fusion.qwen3_5_vl import Qwen3_5VL
from omnikit.fusion.qwen3_omni_speech import Qwen3OmniSpeech
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.fusion.recipes import RECIPES, apply_recipe, parameter_groups
from omnikit.fusion.thinker import GenerationOutput, Thinker, ThinkerStep
from omnikit.fusion.tmrope import (
    QWEN2_5_OMNI,
    QWEN3_OMNI,
    TMRoPEScheme,
    VisualGrid,
    item_positions,
    tmrope_position_ids,
)
from omnikit.fusion.xattn import CrossAttentionOmni
from omnikit.models.sampling import GREEDY, Sampling, sample_next
from omnikit.speech import (
    STRATEGIES,
    TURN_EVENTS,
    CodePredictor,
    DuplexConfig,
    DuplexLoss,
    DuplexModel,
    DuplexStep,
    SpeakingResult,
    SpeechChunk,
    Talker,
    TalkerConfig,
    ThinkerTalker,
    TurnTakingHead,
    codebook_loss,
    per_codebook_loss,
    speak_until_interrupted,
    undelay_logits,
)
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig, Qwen3TalkerScores

__all__ = [
    "GREEDY",
    "MEDIA_MODALITIES",
    "MODALITIES",
    "QWEN2_5_OMNI",
    "QWEN3_5_OMNI",
    "QWEN3_OMNI",
    "RECIPES",
    "STRATEGIES",
    "TURN_EVENTS",
    "AdaptedMedia",
    "AudioAdapter",
    "CodePredictor",
    "CrossAttentionOmni",
    "DeepstackThinker",
    "DuplexConfig",
    "DuplexLoss",
    "DuplexModel",
    "DuplexStep",
    "EarlyFusionOmni",
    "FusedInputs",
    "FusionLayer",
    "GatedCrossAttentionBlock",
    "GenerationOutput",
    "HybridOmniThinker",
    "MLPProjector",
    "MediaTokens",
    "OmniTalker",
    "OmniTalkerConfig",
    "OmniThinker",
    "PackedSequences",
    "Qwen2_5OmniSpeech",
    "Qwen3OmniSpeech",
    "Qwen3OmniTalker",
    "Qwen3OmniTalkerConfig",
    "Qwen3OmniThinker",
    "Qwen3TalkerScores",
    "Qwen3_5OmniSpeech",
    "Qwen3_5VL",
    "ResampledAdapter",
    "Sampling",
    "SpeakingOmni",
    "SpeakingResult",
    "SpeechChunk",
    "SpeechOutput",
    "TMRoPEScheme",
    "Talker",
    "TalkerConfig",
    "Thinker",
    "ThinkerStep",
    "ThinkerTalker",
    "TubeletEncoder",
    "TurnTakingHead",
    "VideoAdapter",
    "VisualGrid",
    "apply_recipe",
    "codebook_loss",
    "fusion_attention_mask",
    "item_positions",
    "media_attention_mask",
    "media_item_ids",
    "mlp_projector",
    "models",
    "pack_sequences",
    "parameter_groups",
    "per_codebook_loss",
    "presets",
    "sample_next",
    "scatter_media",
    "speak_until_interrupted",
    "text_lm_loss",
    "tmrope_position_ids",
    "undelay_logits",
]
