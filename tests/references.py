"""Plain reference implementations the tests compare omnikit's fast paths against."""

from __future__ import annotations

import torch


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Float64 softmax attention with a bool mask (True = attend); ``k``/``v`` may have fewer heads (GQA)."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1).double(), v.repeat_interleave(groups, 1).double()
    scores = q.double() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v).float()


def randomise_norms_and_biases(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Norm weights around 1 and biases around 0 instead of transformers' constant inits; returns ``model.eval()``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=g))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
    return model.eval()


def hf_tiny_mimi_config(transformers, **overrides):
    """A tiny transformers ``MimiConfig`` (800 Hz, 50 frames/s, hop 16, 3 codebooks of 16, window 5)."""
    values = dict(
        hidden_size=16, num_filters=4, upsampling_ratios=[4, 2], num_hidden_layers=2, intermediate_size=32,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, codebook_size=16, codebook_dim=8,
        vector_quantization_hidden_dimension=8, num_quantizers=3, upsample_groups=16, sampling_rate=800,
        frame_rate=50, sliding_window=5,
    )
    return transformers.MimiConfig(**{**values, **overrides})


def randomise_mimi(model: torch.nn.Module) -> torch.nn.Module:
    """A transformers Mimi (or a model holding one) with random norms, layer scales, biases and codebooks."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "scale" in name:
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_()
            elif name.endswith("cluster_usage"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()
