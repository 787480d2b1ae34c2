"""Divided (TimeSformer) vs joint space-time attention: forward time and FLOPs of one block.

    python benchmarks/bench_temporal.py [--dim 192] [--tokens 196] [--frames 8 16 32]

One block of each (``SpaceTimeEncoder(depth=1)``), same width, heads and inputs, timed side by
side in one process (interleaved medians, forward only, no grad).
"""

from __future__ import annotations

import argparse

import torch
from common import format_table, interleaved_medians

from omnikit.video.temporal.spacetime import SpaceTimeConfig, SpaceTimeEncoder


def block_flops(frames: int, tokens: int, dim: int, attention: str) -> float:
    """Matmul FLOPs of one block: projections (4 D^2 per token and attention), MLP (8 D^2 per token),
    attention scores and weighted sums (4 D per query-key pair)."""
    n = frames * tokens
    mlp = 2 * n * 8 * dim * dim
    projections = 2 * n * 4 * dim * dim
    if attention == "joint":
        return mlp + projections + 4 * n * n * dim
    return mlp + 2 * projections + 4 * (tokens * frames**2 + frames * tokens**2) * dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {
        a: SpaceTimeEncoder(SpaceTimeConfig(dim=args.dim, depth=1, num_heads=args.heads, attention=a)).eval()
        for a in ("divided", "joint")
    }
    rows = []
    with torch.no_grad():
        for frames in args.frames:
            x = torch.randn(1, frames, args.tokens, args.dim)
            times = interleaved_medians({a: (lambda m=m, x=x: m(x)) for a, m in models.items()}, repeats=args.repeats,
                                        warmup=1)
            flops = {a: block_flops(frames, args.tokens, args.dim, a) for a in models}
            rows.append([frames, frames * args.tokens, f"{flops['joint'] / flops['divided']:.1f}",
                         f"{times['joint'] / times['divided']:.2f}"])
    print(f"one block, dim {args.dim}, {args.heads} heads, {args.tokens} tokens per frame, batch 1, forward")
    print()
    print(format_table(["frames", "tokens", "joint / divided block FLOPs", "joint / divided time"], rows))


if __name__ == "__main__":
    main()
