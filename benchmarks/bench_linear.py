"""``omnikit.layers.linear`` (oneDNN) against ``F.linear`` (the BLAS sgemm), float32 on the CPU, in one process.

Usage (one thread; process CPU time)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_linear.py [--repeats 11]

For each ``rows x in -> out`` shape (the regression guard's decoder layer and Whisper encoder, the audio
towers', the published-size decoder layer's, a decoding step's) the forward alone and forward +
backward are timed in interleaved rounds; ratios are medians of the per-round ratios
(< 1: ``omnikit.layers.linear`` faster), and the largest relative difference of the outputs is given.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import format_table, interleaved_samples

from omnikit.layers.linear import linear

SHAPES = ((1, 512, 2048), (16, 256, 704), (256, 256, 704), (256, 704, 256), (1000, 256, 1024),
          (897, 512, 2048), (2048, 1024, 2816))


def cases(rows: int, k: int, n: int) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    x = torch.randn(rows, k, requires_grad=True)
    weight, bias = torch.randn(n, k, requires_grad=True), torch.randn(n, requires_grad=True)
    grad = torch.randn(rows, n)
    return {
        "fwd F": torch.no_grad()(lambda: F.linear(x, weight, bias)),
        "fwd omnikit": torch.no_grad()(lambda: linear(x, weight, bias)),
        "fwd+bwd F": lambda: F.linear(x, weight, bias).backward(grad),
        "fwd+bwd omnikit": lambda: linear(x, weight, bias).backward(grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    rows = []
    for shape in SHAPES:
        fns = cases(*shape)
        diff = (fns["fwd omnikit"]() - fns["fwd F"]()).abs().max() / fns["fwd F"]().abs().max()
        samples = interleaved_samples(fns, repeats=args.repeats, warmup=1, clock=time.process_time)
        ratio = {p: statistics.median(a / b for a, b in zip(samples[f"{p} omnikit"], samples[f"{p} F"], strict=True))
                 for p in ("fwd", "fwd+bwd")}
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        rows.append(["x".join(map(str, shape)), f"{med['fwd F']:.2f}", f"{med['fwd omnikit']:.2f}",
                     f"{ratio['fwd']:.2f}", f"{med['fwd+bwd F']:.2f}", f"{med['fwd+bwd omnikit']:.2f}",
                     f"{ratio['fwd+bwd']:.2f}", f"{diff:.1e}"])
        print(" | ".join(rows[-1]), flush=True)
    print(f"\n{torch.get_num_threads()} thread(s), {args.repeats} rounds, process CPU time, float32\n")
    print(format_table(["rows x in -> out", "fwd F.linear (ms)", "fwd omnikit (ms)", "ratio", "fwd+bwd F.linear (ms)",
                        "fwd+bwd omnikit (ms)", "ratio", "max rel diff"], rows))


if __name__ == "__main__":
    main()
