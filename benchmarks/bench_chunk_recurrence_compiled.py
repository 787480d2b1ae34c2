"""The gated delta rule compiled with Inductor: the chunk loop as one opaque operator (this checkout) against
the loop unrolled into the graph (an earlier revision), in one process, same inputs.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_chunk_recurrence_compiled.py --old-rev 063a765``

Each version is compiled with ``torch.compile(dynamic=True)`` and called at three lengths (three chunk counts);
the table gives how many graphs that compiled, the compile time, and the median milliseconds per call at the
longest length (forward, then forward + backward), with eager's for reference. Outputs are checked against
eager before timing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_traced_paths_eager import old_module
from common import format_table, interleaved_medians
from torch._dynamo.utils import counters

from omnikit.layers import linear_attention

LENGTHS = (512, 448, 384)


def inputs(length: int, heads: int = 4, dim: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(length)
    q, k = (F.normalize(torch.randn(2, heads, length, dim, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(2, heads, length, dim, generator=g)
    return [q, k, v, -torch.rand(2, heads, length, generator=g), torch.rand(2, heads, length, generator=g)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-rev", default="063a765")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    old = old_module(args.old_rev, "omnikit/layers/linear_attention.py", Path(tempfile.mkdtemp()))
    def fixed_chunk(fn):  # the chunk size a constant, as a module attribute is (an argument would be dynamic)
        return lambda q, k, v, g, beta: fn(q, k, v, g, beta, None, args.chunk)[0]

    versions = {"unrolled loop (old)": fixed_chunk(old.gated_delta_rule_chunked),
                "opaque operator (new)": fixed_chunk(linear_attention.gated_delta_rule_chunked)}
    compiled, rows = {}, {}
    for name, fn in versions.items():
        torch._dynamo.reset()
        counters.clear()
        compiled[name] = torch.compile(fn, dynamic=True)
        start = time.perf_counter()
        for length in LENGTHS:
            x = inputs(length)
            torch.testing.assert_close(compiled[name](*x), fn(*x), atol=1e-5, rtol=1e-5)
        rows[name] = [counters["stats"]["unique_graphs"], time.perf_counter() - start]
    x = inputs(LENGTHS[0])
    leaves = [t.clone().requires_grad_() for t in x]  # a training step: every input needs its gradient

    def train(fn):
        return lambda: fn(*leaves).square().sum().backward()

    runners = {"eager": versions["opaque operator (new)"], **compiled}
    with torch.no_grad():
        forward = interleaved_medians({k: (lambda f=f: f(*x)) for k, f in runners.items()},
                                      repeats=args.repeats)
    backward = interleaved_medians({k: train(f) for k, f in runners.items()}, repeats=args.repeats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, 2 x 4 heads x d 64, chunk {args.chunk}, "
          f"lengths {LENGTHS}, old = {args.old_rev}\n")
    table = [("eager", "-", "-", f"{forward['eager'] * 1e3:.2f}", f"{backward['eager'] * 1e3:.2f}")]
    for name, (graphs, seconds) in rows.items():
        table.append((name, graphs, f"{seconds:.1f}", f"{forward[name] * 1e3:.2f}", f"{backward[name] * 1e3:.2f}"))
    print(format_table(["gated delta rule", "graphs compiled", "compile + first calls (s)",
                        f"fwd at {LENGTHS[0]} (ms)", f"fwd+bwd at {LENGTHS[0]} (ms)"], table))


if __name__ == "__main__":
    main()
