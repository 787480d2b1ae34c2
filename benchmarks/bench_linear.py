"""``omnikit.layers.linear`` (oneDNN) against ``F.linear`` (the BLAS sgemm), float32 on the CPU, in one process.

Usage (one thread; process CPU time)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_linear.py [--repeats 11] [--rows]

For each ``rows x in -> out`` shape (the regression guard's decoder layer and Whisper encoder, the audio
towers', the published-size decoder layer's, a decoding step's) the forward alone and forward +
backward are timed in interleaved rounds; ratios are medians of the per-round ratios
(< 1: ``omnikit.layers.linear`` faster), and the largest relative difference of the outputs is given.

``--rows``: instead, decoding's few-row products (1, 2, 3 rows) against weights from 49K to 45M elements,
the two kernels called directly (``F.linear``, MKL; ``onednn_linear``), with the weight in cache (one
weight, called again and again) and out of it (a cycle over copies totalling 96 MB, as a decoding step
of a model larger than the cache streams its weights); ratio ``F.linear / oneDNN`` (> 1: oneDNN faster),
and which kernel :func:`linear` picks under ``torch.no_grad``. Wall time (no other work in the process).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import format_table, interleaved_samples

from omnikit.layers.linear import _use_onednn, linear, onednn_linear

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


FEW_ROW_WEIGHTS = ((384, 128), (768, 256), (1024, 512), (1408, 512), (2048, 1024), (8192, 512), (4096, 4096),
                   (11008, 4096), (32000, 1024))


def per_call_us(fn: Callable[[torch.Tensor], object], weights: list[torch.Tensor], repeats: int) -> float:
    """Median over ``repeats`` rounds of one call of ``fn`` on each of ``weights``, in microseconds a call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for weight in weights:
            fn(weight)
        times.append((time.perf_counter() - start) / len(weights))
    return statistics.median(times) * 1e6


def few_rows(repeats: int) -> None:
    table = []
    for out_dim, in_dim in FEW_ROW_WEIGHTS:
        torch.manual_seed(0)
        cold = [torch.randn(out_dim, in_dim) for _ in range(max(2, int(96e6 / (out_dim * in_dim * 4))))]
        row = [f"{out_dim} x {in_dim}", f"{out_dim * in_dim / 1e6:.2f}M"]
        for rows in (1, 2, 3):
            x = torch.randn(rows, in_dim)
            kernels = (lambda w, x=x: F.linear(x, w), lambda w, x=x: onednn_linear(x, w))
            with torch.no_grad():
                warm = [per_call_us(k, cold[:1] * 8, repeats) for k in kernels]
                streamed = [per_call_us(k, cold, repeats) for k in kernels]
                picks = "oneDNN" if _use_onednn(x, cold[0], None) else "F.linear"
            row.append(f"{warm[0] / warm[1]:.2f} / {streamed[0] / streamed[1]:.2f} ({picks})")
        table.append(row)
        print(" | ".join(row), flush=True)
    print(f"\n{torch.get_num_threads()} thread(s), {repeats} rounds, wall time, float32; each cell: F.linear / "
          "oneDNN time with the weight in cache / streamed (> 1: oneDNN faster), and what `linear` picks\n")
    print(format_table(["weight (out x in)", "elements", "1 row", "2 rows", "3 rows"], table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--rows", action="store_true", help="decoding's few-row products, in cache and streamed")
    args = parser.parse_args()
    if args.rows:
        few_rows(args.repeats)
        return
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
