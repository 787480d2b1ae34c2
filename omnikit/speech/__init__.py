"""Speech heads: the Talker (delay / depth / MTP), the depth transformer, full duplex, turn-taking,
and the Thinker-Talker that streams text and speech together."""

from omnikit.speech import presets
from omnikit.speech.depth import CodePredictor, undelay_logits
from omnikit.speech.duplex import DuplexConfig, DuplexLoss, DuplexModel, DuplexStep
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.speech.previous_step import PreviousStep
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig, Qwen3TalkerScores
from omnikit.speech.talker import STRATEGIES, Talker, TalkerConfig, codebook_loss, per_codebook_loss
from omnikit.speech.thinker_talker import SpeechChunk, ThinkerTalker
from omnikit.speech.turn_taking import TURN_EVENTS, SpeakingResult, TurnTakingHead, speak_until_interrupted

__all__ = [
    "STRATEGIES",
    "TURN_EVENTS",
    "CodePredictor",
    "DuplexConfig",
    "DuplexLoss",
    "DuplexModel",
    "DuplexStep",
    "OmniTalker",
    "OmniTalkerConfig",
    "PreviousStep",
    "Qwen3OmniTalker",
    "Qwen3OmniTalkerConfig",
    "Qwen3TalkerScores",
    "SpeakingResult",
    "SpeechChunk",
    "Talker",
    "TalkerConfig",
    "ThinkerTalker",
    "TurnTakingHead",
    "codebook_loss",
    "per_codebook_loss",
    "presets",
    "speak_until_interrupted",
    "undelay_logits",
]
