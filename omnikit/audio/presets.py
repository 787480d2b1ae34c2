"""Registered audio encoder and codec presets: tiny test variants and published shapes.

Published presets build on ``device="meta"`` for counting; see ``docs/audio.md`` for their
parameter counts next to the published ones.
"""

from __future__ import annotations

from typing import Any

from omnikit.audio.aut import AuTEncoder, AuTEncoderConfig
from omnikit.audio.bigvgan import BigVGANConfig
from omnikit.audio.code2wav import Code2Wav, Code2WavConfig
from omnikit.audio.codec import SEANetCodec, SEANetCodecConfig
from omnikit.audio.dac import DacCodec, DacConfig
from omnikit.audio.gemma4 import Gemma4AudioConfig, Gemma4AudioEncoder
from omnikit.audio.mimi import MimiConfig, MimiTokenizer
from omnikit.audio.token2wav import Token2Wav, Token2WavConfig
from omnikit.audio.token2wav_dit import DiTConfig
from omnikit.audio.wav2vec import ConvFeatureEncoder, ConvFeatureEncoderConfig
from omnikit.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from omnikit.audio.whisper import WhisperEncoder, WhisperEncoderConfig
from omnikit.audio.windowed import WindowedAudioEncoder, WindowedAudioEncoderConfig
from omnikit.registry import configure, register_model

__all__ = [
    "code2wav_qwen3_omni",
    "code2wav_tiny",
    "dac_16khz",
    "dac_24khz",
    "dac_44khz",
    "dac_tiny",
    "gemma4_audio",
    "gemma4_audio_tiny",
    "mimi",
    "mimi_style_codec",
    "mimi_tiny",
    "qwen2_5_omni_audio",
    "qwen2_5_omni_audio_tiny",
    "qwen3_omni_aut",
    "qwen3_omni_aut_tiny",
    "seanet_codec_24khz",
    "seanet_codec_tiny",
    "token2wav_qwen2_5_omni",
    "token2wav_tiny",
    "wav2vec2_base",
    "wav2vec2_feature_encoder",
    "wav2vec2_feature_encoder_tiny",
    "wav2vec2_large_feature_encoder",
    "wav2vec2_large_lv60",
    "wav2vec2_tiny",
    "whisper_base_encoder",
    "whisper_encoder_tiny",
    "whisper_large_v3_encoder",
]

_TINY_TRANSFORMER = dict(n_mels=16, dim=32, depth=2, num_heads=4, mlp_hidden=64)
register_audio_encoder = register_model(kind="audio_encoder", modalities=("audio",))


@register_audio_encoder
def whisper_encoder_tiny(**overrides: Any) -> WhisperEncoder:
    """A 2-layer Whisper-style encoder (16 mels, dim 32) for tests."""
    return WhisperEncoder(configure(
        WhisperEncoderConfig, "whisper_encoder_tiny", overrides, **_TINY_TRANSFORMER, max_positions=64))


@register_audio_encoder
def whisper_base_encoder(**overrides: Any) -> WhisperEncoder:
    """Whisper base encoder shapes: 80 mels, 6 layers, dim 512, 8 heads."""
    return WhisperEncoder(configure(
        WhisperEncoderConfig, "whisper_base_encoder", overrides,
        n_mels=80, dim=512, depth=6, num_heads=8, mlp_hidden=2048))


@register_audio_encoder
def whisper_large_v3_encoder(**overrides: Any) -> WhisperEncoder:
    """Whisper large-v3 encoder shapes: 128 mels, 32 layers, dim 1280, 20 heads."""
    return WhisperEncoder(configure(WhisperEncoderConfig, "whisper_large_v3_encoder", overrides))


@register_audio_encoder
def qwen2_5_omni_audio_tiny(**overrides: Any) -> WindowedAudioEncoder:
    """A 2-layer Qwen2.5-Omni-style windowed encoder (windows of 8 frames) for tests."""
    return WindowedAudioEncoder(configure(
        WindowedAudioEncoderConfig, "qwen2_5_omni_audio_tiny", overrides,
        **_TINY_TRANSFORMER, output_dim=24, n_window=4))


@register_audio_encoder
def qwen2_5_omni_audio(**overrides: Any) -> WindowedAudioEncoder:
    """Qwen2.5-Omni-7B audio tower: 128 mels, 32 layers, dim 1280, 2 s windows, 25 tokens/s -> 3584."""
    return WindowedAudioEncoder(configure(WindowedAudioEncoderConfig, "qwen2_5_omni_audio", overrides))


@register_audio_encoder
def qwen3_omni_aut_tiny(**overrides: Any) -> AuTEncoder:
    """A 2-layer Qwen3-Omni-style AuT encoder (chunks of 8 frames, windows of 2 chunks) for tests."""
    return AuTEncoder(configure(
        AuTEncoderConfig, "qwen3_omni_aut_tiny", overrides,
        **_TINY_TRANSFORMER, conv_channels=4, output_dim=24, n_window=4, attn_window_chunks=2))


@register_audio_encoder
def qwen3_omni_aut(**overrides: Any) -> AuTEncoder:
    """Qwen3-Omni-30B-A3B audio tower (AuT): 3x Conv2d(s2) stem, 32 layers, dim 1280, 8 s windows -> 2048."""
    return AuTEncoder(configure(AuTEncoderConfig, "qwen3_omni_aut", overrides, output_dim=2048))


@register_audio_encoder
def wav2vec2_feature_encoder_tiny(**overrides: Any) -> ConvFeatureEncoder:
    """A 2-layer streaming (layer-norm) conv feature encoder, hop 4 samples, for tests."""
    return ConvFeatureEncoder(configure(
        ConvFeatureEncoderConfig, "wav2vec2_feature_encoder_tiny", overrides,
        channels=(8, 8), kernels=(3, 2), strides=(2, 2), norm="layer", conv_bias=True, dim=16))


@register_audio_encoder
def wav2vec2_feature_encoder(**overrides: Any) -> ConvFeatureEncoder:
    """wav2vec 2.0 base feature encoder: 7 convs of 512 (group norm), 20 ms hop, projection to 768."""
    return ConvFeatureEncoder(configure(ConvFeatureEncoderConfig, "wav2vec2_feature_encoder", overrides))


@register_audio_encoder
def wav2vec2_large_feature_encoder(**overrides: Any) -> ConvFeatureEncoder:
    """wav2vec 2.0 large-lv60 feature encoder: layer norm after every conv (streams), projection to 1024."""
    return ConvFeatureEncoder(configure(
        ConvFeatureEncoderConfig, "wav2vec2_large_feature_encoder", overrides, norm="layer", conv_bias=True, dim=1024))


register_codec = register_model(kind="codec", modalities=("audio",))


@register_codec
def seanet_codec_tiny(**overrides: Any) -> SEANetCodec:
    """A tiny causal SEANet codec (hop 4, 2 x 16 codes) for tests."""
    return SEANetCodec(configure(
        SEANetCodecConfig, "seanet_codec_tiny", overrides,
        sample_rate=8000, n_filters=4, ratios=(2, 2), dim=8, num_quantizers=2, codebook_size=16))


@register_codec
def seanet_codec_24khz(**overrides: Any) -> SEANetCodec:
    """EnCodec-sized causal codec: 24 kHz, 75 frames/s, 8 codebooks of 1024 (6 kbps)."""
    return SEANetCodec(configure(SEANetCodecConfig, "seanet_codec_24khz", overrides))


@register_codec
def mimi(**overrides: Any) -> MimiTokenizer:
    """Kyutai's Mimi as published (kyutai/mimi, transformers' ``MimiModel``): 24 kHz, 12.5 frames/s, SEANet
    with 8 causal transformer layers on each side, split RVQ (1 semantic + 31 acoustic) of 2048 codes."""
    return MimiTokenizer(configure(MimiConfig, "mimi", overrides))


@register_codec
def mimi_tiny(**overrides: Any) -> MimiTokenizer:
    """A tiny Mimi (800 Hz, 50 frames/s, hop 16, width 16, 2 transformer layers, 1 + 2 codebooks of 16) for tests."""
    return MimiTokenizer(configure(
        MimiConfig, "mimi_tiny", overrides,
        sample_rate=800, dim=16, n_filters=4, ratios=(4, 2), frame_rate=50.0, codebook_size=16, codebook_dim=8,
        num_quantizers=3, upsample_groups=16, depth=2, num_heads=2, num_kv_heads=2, head_dim=8, mlp_hidden=32,
        sliding_window=5,
    ))


@register_codec
def mimi_style_codec(**overrides: Any) -> SEANetCodec:
    """Mimi-shaped causal codec: 24 kHz, 12.5 frames/s, split RVQ (1 semantic + 7 acoustic) of 2048, dim 512."""
    return SEANetCodec(configure(
        SEANetCodecConfig, "mimi_style_codec", overrides,
        n_filters=32, ratios=(8, 6, 5, 4, 2), dim=512, quantizer="split", num_quantizers=8, codebook_size=2048,
        codebook_dim=256))


@register_model(kind="codec", modalities=("audio",))
def code2wav_tiny(**overrides: Any) -> Code2Wav:
    """A tiny Code2Wav (3 codebooks of 16, width 32, 2 layers, x2 then x2, x3 upsampling) for tests."""
    return Code2Wav(configure(
        Code2WavConfig, "code2wav_tiny", overrides, num_codebooks=3, codebook_size=16, dim=32, depth=2, num_heads=2,
        num_kv_heads=2, mlp_hidden=48, sliding_window=4, upsampling_ratios=(2,), decoder_dim=16,
        upsample_rates=(2, 3), layer_scale=0.5,
    ))


@register_model(kind="codec", modalities=("audio",))
def token2wav_tiny(**overrides: Any) -> Token2Wav:
    """A tiny Qwen2.5-Omni token2wav (a 1-layer DiT of width 32, 8 mels; one x4 BigVGAN stage) for tests."""
    dit = DiTConfig(dim=32, depth=1, num_heads=2, head_dim=16, num_embeds=31, emb_dim=8, mel_dim=8, block_size=4,
                    look_ahead_layers=(0,), look_backward_layers=(0,), xvector_dim=8, speaker_dim=8,
                    speaker_channels=(8, 8, 8), speaker_kernel_sizes=(3, 3, 1), speaker_dilations=(1, 2, 1),
                    speaker_attention_channels=8, speaker_se_channels=4)
    vocoder = BigVGANConfig(mel_dim=8, upsample_initial_channel=16, resblock_kernel_sizes=(3,),
                            resblock_dilation_sizes=((1, 3),), upsample_rates=(4,), upsample_kernel_sizes=(8,))
    return Token2Wav(configure(Token2WavConfig, "token2wav_tiny", overrides, dit=dit, vocoder=vocoder))


@register_model(kind="codec", modalities=("audio",))
def token2wav_qwen2_5_omni(**overrides: Any) -> Token2Wav:
    """Qwen2.5-Omni-7B token2wav: 50 Hz codes (8193 ids) -> DiT (22 layers, width 1024) -> 100 Hz mels -> BigVGAN
    -> 24 kHz (480 samples per code)."""
    return Token2Wav(configure(Token2WavConfig, "token2wav_qwen2_5_omni", overrides))


@register_model(kind="codec", modalities=("audio",))
def code2wav_qwen3_omni(**overrides: Any) -> Code2Wav:
    """Qwen3-Omni-30B-A3B Code2Wav: 16 x 2048 codes at 12.5 frames/s -> 24 kHz (1920 samples per frame)."""
    return Code2Wav(configure(Code2WavConfig, "code2wav_qwen3_omni", overrides))


@register_codec
def dac_tiny(**overrides: Any) -> DacCodec:
    """A tiny DAC (600 Hz, ratios 2 and 3: hop 6, widths 4 / 16, 3 codebooks of 16 in 4 dims) for tests."""
    return DacCodec(configure(
        DacConfig, "dac_tiny", overrides, sample_rate=600, encoder_dim=4, ratios=(2, 3), decoder_dim=16,
        num_codebooks=3, codebook_size=16, codebook_dim=4,
    ))


@register_codec
def dac_16khz(**overrides: Any) -> DacCodec:
    """descript/dac_16khz: 16 kHz, hop 320 (50 frames/s), 12 codebooks of 1024 in 8 dims."""
    return DacCodec(configure(DacConfig, "dac_16khz", overrides, sample_rate=16000, ratios=(2, 4, 5, 8),
                              num_codebooks=12))


@register_codec
def dac_24khz(**overrides: Any) -> DacCodec:
    """descript/dac_24khz: 24 kHz, hop 320 (75 frames/s), 32 codebooks of 1024 in 8 dims."""
    return DacCodec(configure(DacConfig, "dac_24khz", overrides, sample_rate=24000, ratios=(2, 4, 5, 8),
                              num_codebooks=32))


@register_codec
def dac_44khz(**overrides: Any) -> DacCodec:
    """descript/dac_44khz: 44.1 kHz, hop 512 (~86 frames/s), 9 codebooks of 1024 in 8 dims."""
    return DacCodec(configure(DacConfig, "dac_44khz", overrides))


@register_audio_encoder
def wav2vec2_tiny(**overrides: Any) -> Wav2Vec2Encoder:
    """A tiny wav2vec 2.0 encoder on raw waveforms (base layout: group norm, post-LN; hop 4, width 16, 2 layers)."""
    return Wav2Vec2Encoder(configure(
        Wav2Vec2Config, "wav2vec2_tiny", overrides, conv_channels=(8, 8), conv_kernels=(3, 2), conv_strides=(2, 2),
        dim=16, depth=2, num_heads=2, mlp_hidden=32, pos_kernel=4, pos_groups=2,
    ))


@register_audio_encoder
def wav2vec2_base(**overrides: Any) -> Wav2Vec2Encoder:
    """facebook/wav2vec2-base: 16 kHz waveforms, 20 ms frames, 12 post-LN layers of 768 (94.4 M parameters)."""
    return Wav2Vec2Encoder(configure(Wav2Vec2Config, "wav2vec2_base", overrides))


@register_audio_encoder
def wav2vec2_large_lv60(**overrides: Any) -> Wav2Vec2Encoder:
    """facebook/wav2vec2-large-lv60: layer-norm conv encoder, 24 pre-LN layers of 1024 (315.4 M parameters)."""
    return Wav2Vec2Encoder(configure(
        Wav2Vec2Config, "wav2vec2_large_lv60", overrides, conv_bias=True, feat_norm="layer", dim=1024, depth=24,
        num_heads=16, mlp_hidden=4096, stable_layer_norm=True,
    ))
@register_audio_encoder
def gemma4_audio_tiny(**overrides: Any) -> Gemma4AudioEncoder:
    """A 2-block Gemma 4 conformer audio tower (16 mels, dim 32, blocks of 4 tokens) with a 32-wide embedder."""
    return Gemma4AudioEncoder(configure(
        Gemma4AudioConfig, "gemma4_audio_tiny", overrides, n_mels=16, dim=32, depth=2, num_heads=4, channels=(16, 8),
        chunk_size=4, context_left=6, out_dim=24, text_dim=32))


@register_audio_encoder
def gemma4_audio(**overrides: Any) -> Gemma4AudioEncoder:
    """Gemma 4 E2B / E4B audio tower shapes: 128 mels, 12 conformer blocks at dim 1024, 8 heads, output 1536
    (pass ``text_dim`` for the embedder into a language model: 1536 for E2B, 2560 for E4B)."""
    return Gemma4AudioEncoder(configure(Gemma4AudioConfig, "gemma4_audio", overrides))
