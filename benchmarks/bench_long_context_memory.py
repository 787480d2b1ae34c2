"""Analytic per-GPU training memory of the published language presets at a long context, cp = 1, 2, 4, 8.

Run: ``PYTHONPATH=. python benchmarks/bench_long_context_memory.py [--context 262144] [--gpus 8]``;
``--prefill`` prints the inference side instead: one device's memory for a chunked prefill of
``context`` tokens (bf16 weights, the bf16 KV cache of the full-attention layers, the float32
Gated DeltaNet states, one block's activations for one chunk) and which single GPU holds it.
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
from omnikit.layers.linear_attention import GatedDeltaNet

#: Memory of the single GPUs the prefill table checks (GiB as the runtime reports them).
DEVICES = {"H100 80 GB": 79.6, "H200 141 GB": 139.8}

#: Dense, MoE and omni presets, then the hybrids (3 Gated DeltaNet layers per full-attention layer).
PRESETS = ["qwen3_1_7b", "qwen2_5_omni_7b_thinker", "qwen3_30b_a3b", "qwen3_omni_30b_a3b_thinker",
           "qwen3_next_80b_a3b", "qwen3_5_9b", "qwen3_5_35b_a3b", "qwen3_5_omni_35b_a3b"]


def gathered_kv_per_token(model) -> float:
    """bf16 bytes per token of one full-attention layer's keys and values and their gradients."""
    stacks = [m for m in model.modules() if isinstance(m, (Decoder, HybridDecoder))]
    layers = [a for s in stacks for a in s.modules() if isinstance(a, Attention)]
    return max(2 * 2 * a.num_kv_heads * a.head_dim * 2 for a in layers)


def prefill_rows(names: list[str], context: int, chunk: int) -> list[tuple]:
    """Per preset: GiB of weights, KV cache, linear-attention states, chunk activations, total, and
    the single GPUs that hold it."""
    rows = []
    for name in names:
        model = omnikit.create_model(name, device="meta")
        weights = 2 * sum(p.numel() for p in model.parameters())
        stacks = [m for m in model.modules() if isinstance(m, (Decoder, HybridDecoder))]
        attention = [a for s in stacks for a in s.modules() if isinstance(a, Attention)]
        kv = sum(2 * 2 * a.num_kv_heads * a.head_dim for a in attention) * context
        states = sum(4 * g.num_v_heads * g.head_dim * g.v_head_dim + 4 * g.conv.weight.numel()
                     for s in stacks for g in s.modules() if isinstance(g, GatedDeltaNet))
        blocks = sum(len(getattr(s, "blocks", getattr(s, "layers", []))) for s in stacks) or 1
        activations = estimate_memory(model, {}).activations_per_token / blocks * chunk
        total = weights + kv + states + activations
        fits = [device for device, gib in DEVICES.items() if total / GIB <= gib] or ["none (split the weights)"]
        rows.append((name, f"{weights / GIB:.1f}", f"{kv / GIB:.1f}", f"{states / GIB:.3f}",
                     f"{activations / GIB:.2f}", f"{total / GIB:.1f}", ", ".join(fits)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=262144)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--prefill", action="store_true", help="one device's chunked prefill memory instead")
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("names", nargs="*", default=PRESETS)
    args = parser.parse_args()
    if args.prefill:
        print(f"chunked prefill of {args.context} tokens in chunks of {args.chunk}, one device, bf16\n")
        print(format_table(["preset", "weights GiB", "KV cache GiB", "GDN states GiB", "chunk activations GiB",
                            "total GiB", "one GPU that holds it"],
                           prefill_rows(args.names, args.context, args.chunk)))
        return
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
