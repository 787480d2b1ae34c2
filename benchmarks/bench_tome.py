"""Token merging before a temporal transformer: speed-up and token count.

    python benchmarks/bench_tome.py [--frames 16] [--tokens 196] [--targets 1568 784 392]

Frame tokens ``(1, T*N, D)`` go through a 4-block :class:`~omnikit.video.TemporalTransformer`
either as they are, or after :func:`~omnikit.video.merge_tokens` to a target count. Times are
medians of interleaved repeats in one process (forward, no grad); the merged path includes the
merging itself.
"""

from __future__ import annotations

import argparse

import torch
from common import format_table, interleaved_medians

from omnikit.video import merge_tokens
from omnikit.video.temporal.transformer import TemporalTransformer, TemporalTransformerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--targets", type=int, nargs="+", default=[1568, 784, 392])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TemporalTransformer(TemporalTransformerConfig(dim=args.dim, depth=args.depth, num_heads=6)).eval()
    # redundant frame tokens, as in real video: a slowly changing scene plus noise
    scene = torch.randn(args.tokens, args.dim)
    drift = torch.cumsum(0.05 * torch.randn(args.frames, 1, args.dim), dim=0)
    tokens = (scene + drift + 0.1 * torch.randn(args.frames, args.tokens, args.dim)).reshape(1, -1, args.dim)

    def full() -> None:
        model(tokens)

    def merged(target: int) -> None:
        model(merge_tokens(tokens, target).tokens)

    fns = {"full": full} | {f"tome {t}": (lambda t=t: merged(t)) for t in args.targets}
    fns |= {f"merge only {t}": (lambda t=t: merge_tokens(tokens, t)) for t in args.targets}
    with torch.no_grad():
        times = interleaved_medians(fns, repeats=args.repeats, warmup=1)
    total = tokens.shape[1]
    rows = [[total, "1.00", "-", "-"]]
    for t in args.targets:
        rows.append([t, f"{times['full'] / times[f'tome {t}']:.2f}",
                     f"{times[f'merge only {t}'] / times[f'tome {t}']:.2f}", f"{total / t:.1f}x"])
    print(f"{args.frames} frames x {args.tokens} tokens, dim {args.dim}, temporal transformer depth {args.depth}")
    print()
    print(format_table(["tokens into the transformer", "speed-up vs full (incl. merging)",
                        "share of time spent merging", "compression"], rows))


if __name__ == "__main__":
    main()
