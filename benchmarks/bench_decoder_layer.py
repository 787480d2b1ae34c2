"""omnikit DecoderBlock vs transformers' Qwen3DecoderLayer (sdpa), fwd and fwd+bwd, same weights and inputs.

Usage: python benchmarks/bench_decoder_layer.py [--tokens 2048] [--repeats 7]

Prints a markdown table: median times, the ratio transformers/omnikit (>1 means omnikit is
faster), and each layer's model-FLOP utilisation against this machine's fp32 matmul rate.
"""

from __future__ import annotations

import argparse

import torch
from common import format_table, interleaved_medians, matmul_flops_per_second
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

from omnikit.convert import from_transformers


def layer_flops(tokens: int, dim: int, heads: int, kv_heads: int, head_dim: int, ffn: int) -> float:
    """Forward matmul FLOPs of one decoder layer with causal attention (half the score matrix)."""
    projections = 2 * tokens * dim * (heads + 2 * kv_heads) * head_dim + 2 * tokens * heads * head_dim * dim
    mlp = 2 * tokens * 3 * dim * ffn
    attention = 2 * 2 * tokens * tokens * heads * head_dim / 2
    return projections + mlp + attention


def bench(tokens: int, head_dim: int, repeats: int, peak: float) -> list[list[object]]:
    dim, heads, kv_heads, ffn = 1024, 16, 4, 2816
    config = Qwen3Config(
        hidden_size=dim, intermediate_size=ffn, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    hf = Qwen3DecoderLayer(config, 0)
    ours = from_transformers(hf)
    x = torch.randn(1, tokens, dim)
    x_grad = x.clone().requires_grad_(True)
    rope = Qwen3RotaryEmbedding(config)(x, torch.arange(tokens)[None])

    def hf_fwd() -> None:
        with torch.no_grad():
            hf(x, attention_mask=None, position_embeddings=rope)

    def ours_fwd() -> None:
        with torch.no_grad():
            ours(x)

    def hf_train() -> None:
        hf(x_grad, attention_mask=None, position_embeddings=rope).sum().backward()

    def ours_train() -> None:
        ours(x_grad).sum().backward()

    times = interleaved_medians(
        {"hf_fwd": hf_fwd, "ours_fwd": ours_fwd, "hf_train": hf_train, "ours_train": ours_train}, repeats=repeats
    )
    flops = layer_flops(tokens, dim, heads, kv_heads, head_dim, ffn)
    rows = []
    for label, scale, hf_key, ours_key in (("fwd", 1, "hf_fwd", "ours_fwd"), ("fwd+bwd", 3, "hf_train", "ours_train")):
        t_hf, t_ours = times[hf_key], times[ours_key]
        rows.append([
            f"head_dim {head_dim}", label, f"{t_hf * 1e3:.1f}", f"{t_ours * 1e3:.1f}", f"{t_hf / t_ours:.2f}x",
            f"{scale * flops / t_hf / peak:.0%}", f"{scale * flops / t_ours / peak:.0%}",
        ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    peak = matmul_flops_per_second()
    print(f"threads: {torch.get_num_threads()}, fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s, tokens: {args.tokens}")
    rows = []
    for head_dim in (64, 128):
        rows += bench(args.tokens, head_dim, args.repeats, peak)
    print(format_table(
        ["config", "pass", "transformers ms", "omnikit ms", "speed-up", "MFU transformers", "MFU omnikit"], rows
    ))


if __name__ == "__main__":
    main()
