"""Tiny ``config.json`` dicts of published architectures, for random snapshots (``build_hf`` + ``save_hf``),
doc snippets and offline examples."""

from __future__ import annotations

from typing import Any

__all__ = ["qwen3_omni_tiny_config"]

ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "interleaved": True}


def qwen3_omni_tiny_config() -> dict[str, Any]:
    """A tiny Qwen3-Omni ``config.json`` dict with the Talker and Code2Wav (``build_hf(config, part="omni")``):
    ids 141..156 are its chat markers and media placeholders (audio 150, audio start/end 155/156) in a
    160-token vocabulary; the Talker's codec vocabulary is its 32 codes plus 1024 special ids, as published;
    Code2Wav has the published rates (1920 samples per frame at 24 kHz)."""
    return {
        "architectures": ["Qwen3OmniMoeForConditionalGeneration"], "model_type": "qwen3_omni_moe",
        "im_start_token_id": 141, "im_end_token_id": 142, "user_token_id": 143, "assistant_token_id": 144,
        "system_token_id": 145, "tts_pad_token_id": 146, "tts_bos_token_id": 147, "tts_eos_token_id": 148,
        "thinker_config": {
            "audio_token_id": 150, "image_token_id": 151, "video_token_id": 152, "vision_start_token_id": 153,
            "vision_end_token_id": 154, "audio_start_token_id": 155, "audio_end_token_id": 156,
            "audio_config": {"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                             "encoder_ffn_dim": 32, "d_model": 16, "n_window": 50, "output_dim": 32,
                             "n_window_infer": 300, "downsample_hidden_size": 8},
            "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 24, "num_heads": 2, "patch_size": 4,
                              "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 32,
                              "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
            "text_config": {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                            "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
                            "rope_parameters": dict(ROPE)},
        },
        "talker_config": {
            "text_config": {"vocab_size": 32 + 1024, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                            "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24, "num_experts": 4,
                            "num_experts_per_tok": 2, "rope_parameters": dict(ROPE)},
            "code_predictor_config": {"vocab_size": 32, "hidden_size": 32, "intermediate_size": 48,
                                      "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                                      "head_dim": 8, "num_code_groups": 4,
                                      "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
            "num_code_groups": 4, "thinker_hidden_size": 32, "accept_hidden_layer": 1, "speaker_id": {"ethan": 1050},
            "spatial_merge_size": 2,
            "codec_nothink_id": 1040, "codec_think_bos_id": 1041, "codec_think_eos_id": 1042, "codec_pad_id": 1043,
            "codec_bos_id": 1044, "codec_eos_token_id": 1045, "audio_token_id": 150, "image_token_id": 151,
            "video_token_id": 152, "vision_start_token_id": 153, "audio_start_token_id": 155,
        },
        "code2wav_config": {"codebook_size": 32, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 4,
                            "sliding_window": 8, "intermediate_size": 48, "num_hidden_layers": 2, "num_quantizers": 4,
                            "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2], "decoder_dim": 32},
    }
