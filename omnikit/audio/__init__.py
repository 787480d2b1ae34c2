"""Audio: feature frontends, audio encoders, quantizers and codec tokenizers.

Importing this package registers the audio models (``omnikit.list_models(kind="audio_encoder")``).
torchaudio and encodec are imported only by the functions that need them.
"""

from omnikit.audio import presets  # noqa: F401  (registers the models)
from omnikit.audio.aut import AuTEncoder, AuTEncoderConfig
from omnikit.audio.bigvgan import BigVGAN, BigVGANConfig
from omnikit.audio.blocks import EncoderStack, encoder_block, sinusoids
from omnikit.audio.code2wav import Code2Wav, Code2WavConfig, Code2WavOutput
from omnikit.audio.codec import CodecOutput, SEANetCodec, SEANetCodecConfig
from omnikit.audio.dac import DacCodec, DacConfig, DacOutput
from omnikit.audio.ecapa import SpeakerEncoder
from omnikit.audio.features import LogMelSpectrogram, log_mel_spectrogram, mel_filterbank
from omnikit.audio.fsq import FSQ
from omnikit.audio.interface import Codec, CodeDecoder, check_codec
from omnikit.audio.layouts import (
    delay_codes,
    delay_mask,
    flatten_codes,
    undelay_codes,
    undelay_logits,
    unflatten_codes,
)
from omnikit.audio.long import encode_long, iter_encode
from omnikit.audio.quantize import QuantizerOutput, ResidualVQ, VectorQuantizer, kmeans
from omnikit.audio.seanet import CausalConvTranspose1d, SEANetDecoder, SEANetEncoder
from omnikit.audio.signal import check_waveform, kaldi_fbank, resample, to_mono
from omnikit.audio.snake import Snake
from omnikit.audio.sources import AudioSource, rechunk
from omnikit.audio.speakers import Speakers, UnknownSpeakerError, Voice, convert_speakers, load_speakers
from omnikit.audio.split_rvq import SplitQuantizerOutput, SplitResidualVQ
from omnikit.audio.stream import encode_stream, stream_encode, stream_log_mel
from omnikit.audio.token2wav import Token2Wav, Token2WavConfig, Token2WavStream
from omnikit.audio.token2wav_dit import DiTConfig, Token2WavDiT
from omnikit.audio.wav2vec import ConvFeatureEncoder, ConvFeatureEncoderConfig
from omnikit.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from omnikit.audio.whisper import WhisperEncoder, WhisperEncoderConfig
from omnikit.audio.windowed import WindowedAudioEncoder, WindowedAudioEncoderConfig

__all__ = [
    "FSQ",
    "AuTEncoder",
    "AuTEncoderConfig",
    "AudioSource",
    "BigVGAN",
    "BigVGANConfig",
    "CausalConvTranspose1d",
    "Code2Wav",
    "Code2WavConfig",
    "Code2WavOutput",
    "CodeDecoder",
    "Codec",
    "CodecOutput",
    "ConvFeatureEncoder",
    "ConvFeatureEncoderConfig",
    "DacCodec",
    "DacConfig",
    "DacOutput",
    "DiTConfig",
    "EncoderStack",
    "LogMelSpectrogram",
    "QuantizerOutput",
    "ResidualVQ",
    "SEANetCodec",
    "SEANetCodecConfig",
    "SEANetDecoder",
    "SEANetEncoder",
    "Snake",
    "SpeakerEncoder",
    "Speakers",
    "SplitQuantizerOutput",
    "SplitResidualVQ",
    "Token2Wav",
    "Token2WavConfig",
    "Token2WavDiT",
    "Token2WavStream",
    "UnknownSpeakerError",
    "VectorQuantizer",
    "Voice",
    "Wav2Vec2Config",
    "Wav2Vec2Encoder",
    "WhisperEncoder",
    "WhisperEncoderConfig",
    "WindowedAudioEncoder",
    "WindowedAudioEncoderConfig",
    "check_codec",
    "check_waveform",
    "convert_speakers",
    "delay_codes",
    "delay_mask",
    "encode_long",
    "encode_stream",
    "encoder_block",
    "flatten_codes",
    "iter_encode",
    "kaldi_fbank",
    "kmeans",
    "load_speakers",
    "log_mel_spectrogram",
    "mel_filterbank",
    "rechunk",
    "resample",
    "sinusoids",
    "stream_encode",
    "stream_log_mel",
    "to_mono",
    "undelay_codes",
    "undelay_logits",
    "unflatten_codes",
]
