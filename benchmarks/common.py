"""Shared timing helpers for the benchmarks: interleaved repeats, medians, matmul peak, tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["format_table", "interleaved_medians", "interleaved_samples", "matmul_flops_per_second", "speedup_table"]


def _time_once(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = clock()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return clock() - start


def interleaved_samples(
    fns: dict[str, Callable[[], object]], *, repeats: int = 7, warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of every timed call of each function, timed round-robin so drift hits all alike.

    ``clock``: wall time by default; ``time.process_time`` (the process's CPU time) on a loaded CPU,
    where wall time mostly measures waiting for a core (single-threaded runs only)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_time_once(fn, clock))
    return samples


def interleaved_medians(fns: dict[str, Callable[[], object]], *, repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function (see :func:`interleaved_samples`)."""
    samples = interleaved_samples(fns, repeats=repeats, warmup=warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def matmul_flops_per_second(
    n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5, device: str = "cpu"
) -> float:
    """The machine's dense matmul rate (FLOP/s) on an ``n x n @ n x n`` product, median of repeats."""
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    seconds = interleaved_medians({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * n**3 / seconds


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def speedup_table(rows: Sequence[tuple[str, Callable[[], object], Callable[[], object]]], title: str, *,
                  repeats: int, warmup: int = 1) -> str:
    """``(name, transformers call, omnikit call)`` rows timed side by side: a table of median seconds and the
    ratio transformers / omnikit (> 1: omnikit is faster)."""
    table = []
    for name, theirs, mine in rows:
        t = interleaved_medians({"hf": theirs, "ours": mine}, repeats=repeats, warmup=warmup)
        table.append((name, f"{t['hf']:.3f}", f"{t['ours']:.3f}", f"{t['hf'] / t['ours']:.2f}x"))
    return format_table([title, "transformers (s)", "omnikit (s)", "speed-up"], table)


def pyplot():
    """matplotlib's ``pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_memory_time(axes: Sequence, x: Sequence[float], memory: Sequence[float], seconds: Sequence[float],
                     style: str, label: str) -> None:
    """One curve on a ``(memory axis, time axis)`` pair."""
    axes[0].plot(x, memory, style, marker="o", label=label)
    axes[1].plot(x, seconds, style, marker="o", label=label)
