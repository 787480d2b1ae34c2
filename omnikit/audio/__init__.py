"""Audio: feature frontends, audio encoders, quantizers and codec tokenizers.

Importing this package registers the audio models (``omnikit.list_models(kind="audio_encoder")``).
torchaudio and encodec are imported only by the functions that need them.
"""

from omnikit.audio import presets  # noqa: F401  (registers the models)
from omnikit.audio.aut import AuTEncoder, AuTEncoderConfig
from omnikit.audio.blocks import EncoderBlock, EncoderStack, sinusoids
from omnikit.audio.wav2vec import ConvFeatureEncoder, ConvFeatureEncoderConfig
from omnikit.audio.whisper import WhisperEncoder, WhisperEncoderConfig
from omnikit.audio.windowed import WindowedAudioEncoder, WindowedAudioEncoderConfig

__all__ = [
    "AuTEncoder",
    "AuTEncoderConfig",
    "ConvFeatureEncoder",
    "ConvFeatureEncoderConfig",
    "EncoderBlock",
    "EncoderStack",
    "WhisperEncoder",
    "WhisperEncoderConfig",
    "WindowedAudioEncoder",
    "WindowedAudioEncoderConfig",
    "sinusoids",
]
