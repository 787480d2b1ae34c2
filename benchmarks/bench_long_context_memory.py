"""Analytic per-GPU training memory of the published language presets at a long context, cp = 1, 2, 4, 8.

Run: ``PYTHONPATH=. python benchmarks/bench_long_context_memory.py [--context 262144] [--gpus 8]``.
Models are built on the meta device. On ``gpus`` GPUs the mesh is ``dp_shard = gpus / cp`` x ``cp``:
parameters, gradients and Adam shard over all ``gpus`` ranks either way (FSDP over ``dp_shard x cp``),
so cp changes only the activations: each rank holds ``context / cp`` tokens of
:func:`omnikit.distributed.memory.estimate_memory`'s checkpointed activations, plus, in the one
attention layer running at a time, the bf16 keys and values gathered from every cp rank (the whole
sequence) and their gradients. One sequence per rank group; attention scores not counted (flash).
"""

from __future__ import annotations

import argparse

from common import format_table

import omnikit
from omnikit.distributed.memory import GIB, estimate_memory
from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder
from omnikit.layers.hybrid import HybridDecoder

PRESETS = ["qwen3_1_7b", "qwen2_5_omni_7b_thinker", "qwen3_30b_a3b", "qwen3_omni_30b_a3b_thinker",
           "qwen3_next_80b_a3b"]


def gathered_kv_per_token(model) -> float:
    """bf16 bytes per token of one full-attention layer's keys and values and their gradients."""
    stacks = [m for m in model.modules() if isinstance(m, (Decoder, HybridDecoder))]
    layers = [a for s in stacks for a in s.modules() if isinstance(a, Attention)]
    return max(2 * 2 * a.num_kv_heads * a.head_dim * 2 for a in layers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=262144)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("names", nargs="*", default=PRESETS)
    args = parser.parse_args()
    rows = []
    for name in args.names:
        model = omnikit.create_model(name, device="meta")
        estimate = estimate_memory(model, {"dp_shard": args.gpus})
        kv = gathered_kv_per_token(model) * args.context
        for cp in (1, 2, 4, 8):
            activations = estimate.activations_per_token_checkpointed * args.context / cp
            total = estimate.states + activations + (kv if cp > 1 else 0)
            rows.append((name, cp, f"{estimate.states / GIB:.1f}", f"{activations / GIB:.1f}",
                         f"{kv / GIB:.2f}" if cp > 1 else "-", f"{total / GIB:.1f}"))
    print(f"context {args.context}, {args.gpus} GPUs (dp_shard = {args.gpus} / cp), activation checkpointing\n")
    print(format_table(["preset", "cp", "states GiB", "activations GiB", "gathered K/V GiB", "total GiB"], rows))


if __name__ == "__main__":
    main()
