"""omnikit ResidualVQ vs vector-quantize-pytorch's, fwd+bwd in training mode at the same configuration.

Run: ``python benchmarks/bench_rvq.py [--repeats 7]``. Both quantizers: EMA codebooks (decay 0.99),
k-means initialised (done during warm-up), dead-code restart below 2, commitment weight 1,
straight-through gradients. Prints a markdown table; ratio > 1 means omnikit is faster.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from functools import partial

import torch
import vector_quantize_pytorch
from common import format_table, interleaved_medians

from omnikit.audio import ResidualVQ

CONFIGS = [  # (dim, quantizers, codebook size, batch, frames)
    (128, 8, 1024, 8, 750),   # EnCodec 24 kHz, 6 kbps, 8 x 10 s
    (256, 32, 1024, 4, 375),  # EnCodec 24 kHz, 24 kbps, 4 x 5 s
    (256, 8, 2048, 16, 125),  # Mimi-like, 12.5 Hz, 16 x 10 s
]


def step(rvq: torch.nn.Module, x: torch.Tensor) -> None:
    quantized, _codes, loss = tuple(rvq(x))[:3]
    (quantized.square().mean() + loss.sum()).backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for dim, n_q, size, batch, frames in CONFIGS:
        torch.manual_seed(0)
        theirs = vector_quantize_pytorch.ResidualVQ(
            dim=dim, num_quantizers=n_q, codebook_size=size, kmeans_init=True, decay=0.99,
            threshold_ema_dead_code=2, commitment_weight=1.0).train()
        ours = ResidualVQ(dim, n_q, size, decay=0.99, dead_threshold=2.0, commitment_weight=1.0).train()
        x = torch.randn(batch, frames, dim, requires_grad=True)
        t = interleaved_medians({"vqp": partial(step, theirs, x), "ours": partial(step, ours, x)},
                                repeats=args.repeats, warmup=2)
        rows.append((f"dim {dim}, {n_q} x {size}, {batch} x {frames} frames", f"{t['vqp'] * 1e3:.0f}",
                     f"{t['ours'] * 1e3:.0f}", f"{t['vqp'] / t['ours']:.2f}x"))
    version = importlib.metadata.version("vector-quantize-pytorch")
    print(f"torch {torch.__version__}, vector-quantize-pytorch {version}, threads {torch.get_num_threads()}\n")
    print(format_table(["ResidualVQ fwd+bwd (train, CPU)", "vector-quantize-pytorch (ms)", "omnikit (ms)",
                        "speed-up"], rows))


if __name__ == "__main__":
    main()
