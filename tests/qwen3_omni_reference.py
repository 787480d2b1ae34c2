"""Shared by the Qwen3-Omni checkpoint tests: random weights for transformers modules and the published config.

``PUBLISHED`` holds the sub-config values of Qwen3-Omni-30B-A3B-Instruct's ``config.json`` that differ
from transformers' defaults or that the presets depend on (transformers' default config objects are
not the published ones).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def randomise(module: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    """Every parameter random, norms and biases included: 1-D weights ``1 + scale * N(0, 1)``, the rest
    ``scale * N(0, 1)`` (not transformers' constant inits, which would hide a swapped norm or bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            one_d_weight = p.ndim == 1 and name.endswith("weight")
            p.copy_(noise + 1.0 if one_d_weight else noise)
    return module


def rel_err(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``|ours - reference| / |reference|`` (Frobenius)."""
    return float((ours.double() - reference.double()).norm() / reference.double().norm())


def assert_within_reference_rounding(ours: torch.Tensor, reference: nn.Module,
                                     run: Callable[[nn.Module], torch.Tensor], factor: float = 2.0) -> None:
    """``ours`` (float32) is as close to the float64 result of ``reference`` as the reference's own
    float32 result is, within ``factor``.

    For deep convolutional decoders float32 rounding is amplified layer by layer, so a fixed bound
    such as 1e-5 fails by chance with some weights and thread counts; the reference's own float32
    error is the yardstick that follows from the arithmetic. A layout mistake gives errors of order 1.
    """
    with torch.no_grad():
        ref32 = run(reference)
        ref64 = run(copy.deepcopy(reference).double())
    own = rel_err(ref32.double(), ref64)
    ours_err = float((ours.double() - ref64).norm() / ref64.norm())
    assert ours_err <= factor * own + 1e-9, f"omnikit {ours_err:.3g} vs the reference's own float32 error {own:.3g}"
    assert ours_err < 1e-4


#: Qwen3-Omni-30B-A3B-Instruct (config.json, transformers 5 layout).
PUBLISHED = {
    "vision": dict(
        depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304, num_heads=16,
        in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048,
        num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
    ),
    "talker_text": dict(
        vocab_size=3072, hidden_size=1024, intermediate_size=2048, num_hidden_layers=20, num_attention_heads=16,
        num_key_value_heads=2, head_dim=128, moe_intermediate_size=384, shared_expert_intermediate_size=768,
        num_experts=128, num_experts_per_tok=6, norm_topk_prob=True, rms_norm_eps=1e-6, decoder_sparse_step=1,
        mlp_only_layers=[],
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [24, 20, 20],
                         "interleaved": True},
    ),
    "code_predictor": dict(
        vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, num_code_groups=16,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    ),
    "talker": dict(num_code_groups=16, thinker_hidden_size=2048, accept_hidden_layer=24, spatial_merge_size=2,
                   codec_bos_id=2149),
    "code2wav": dict(
        codebook_size=2048, hidden_size=1024, num_attention_heads=16, num_key_value_heads=16, sliding_window=72,
        intermediate_size=3072, layer_scale_initial_scale=0.01, rms_norm_eps=1e-5, num_hidden_layers=8,
        num_quantizers=16, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], decoder_dim=1536,
        max_position_embeddings=8000, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "thinker_text": dict(
        vocab_size=152064, hidden_size=2048, intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=4, head_dim=128, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
        norm_topk_prob=True, rms_norm_eps=1e-6, decoder_sparse_step=1, mlp_only_layers=[],
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [24, 20, 20],
                         "interleaved": True},
    ),
    "audio": dict(
        num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, d_model=1280,
        n_window=50, output_dim=2048, n_window_infer=800, conv_chunksize=500, downsample_hidden_size=480,
    ),
}


def tame_code2wav(model: nn.Module, codebook_size: int, num_quantizers: int) -> None:
    """Scale a randomised transformers Code2Wav's last conv so its waveform peaks at 0.5 (random weights
    otherwise saturate the output clamp and a comparison would only compare clamps)."""
    last = model.decoder[-1].conv
    with torch.no_grad():
        last.bias.zero_()
        last.weight.mul_(1e-3)
        codes = torch.randint(0, codebook_size, (1, num_quantizers, 12), generator=torch.Generator().manual_seed(9))
        last.weight.mul_(0.5 / float(model(codes).abs().max()))


ROPE_M = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "interleaved": True}

#: A tiny ``Qwen3OmniMoeConfig`` (explicit values; every sub-model two or three layers).
TINY_FULL = dict(
    thinker_config=dict(
        audio_config=dict(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                          n_window=50, output_dim=32, n_window_infer=300, downsample_hidden_size=8),
        vision_config=dict(depth=3, hidden_size=16, intermediate_size=24, num_heads=2, patch_size=4,
                           temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=32, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        text_config=dict(vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, moe_intermediate_size=16,
                         num_experts=4, num_experts_per_tok=2, rope_parameters=ROPE_M),
        audio_token_id=150, image_token_id=151, video_token_id=152, vision_start_token_id=153,
        vision_end_token_id=154, audio_start_token_id=155, audio_end_token_id=156,
    ),
    talker_config=dict(
        text_config=dict(vocab_size=48, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, moe_intermediate_size=16,
                         shared_expert_intermediate_size=24, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                         rope_parameters=ROPE_M),
        code_predictor_config=dict(vocab_size=20, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_code_groups=4,
                                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        num_code_groups=4, thinker_hidden_size=32, codec_bos_id=41, spatial_merge_size=2,
    ),
    code2wav_config=dict(codebook_size=20, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         sliding_window=5, intermediate_size=48, num_hidden_layers=2, num_quantizers=4,
                         upsample_rates=[2, 3], upsampling_ratios=[2], decoder_dim=16),
)
