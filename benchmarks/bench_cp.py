"""Prefill peak memory and time vs context: one process vs context parallel over 2 and 4 ranks (gloo, CPU).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_cp.py [--contexts 2048 4096 8192]``.
The models of ``bench_prefill.py`` (dense decoder LM and hybrid Gated DeltaNet + attention stack, dim
64, 4 layers). Each cell runs in fresh processes: ``cp = 1`` is a plain forward, ``cp = 2, 4`` spawn
that many gloo ranks, ``parallelize`` the model on a ``"cp"`` mesh and run each rank's load-balanced
positions. After a warm-up on a prompt 8 times shorter, every rank reports the growth of its peak
resident memory and its wall time over the prefill; the table gives the worst rank. Each rank runs
one thread, so on a machine with fewer free cores than ranks the cp times measure contention, not
the split.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_prefill import DIM, VOCAB, build, peak_mib
from common import format_table

from omnikit.distributed import build_mesh, parallelize
from omnikit.distributed.cp import cp_positions


def prompt(kind: str, context: int, dim: int = DIM, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (1, context), generator=g) if kind == "dense" else torch.randn(
        1, context, dim, generator=g)


def measure(model: torch.nn.Module, kind: str, context: int, cp: tuple[int, int], shape: dict | None = None) -> dict:
    """Warm up, then prefill this rank's positions of a ``context``-long prompt: peak memory growth (MiB),
    seconds and the output at the prompt's last position (held by rank 0). ``shape``: arguments of ``build``."""
    shape = shape or {}
    for length in (context // 8, context):
        index = cp_positions(length, cp)
        x = prompt(kind, length, shape.get("dim", DIM), shape.get("vocab", VOCAB))[:, index]
        base, start, cpu = peak_mib(), time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model(x, positions=index)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"delta": peak_mib() - base, "seconds": seconds, "cpu_seconds": cpu, "last": float(out[0, -1].sum())}


def rank_main(rank: int, size: int, port: int, kind: str, context: int, shape: dict | None = None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size, init_method=f"tcp://127.0.0.1:{port}",
                            timeout=timedelta(seconds=600))
    model = parallelize(build(kind, **(shape or {})), build_mesh("cpu", cp=size))
    result = measure(model, kind, context, (rank, size), shape)
    results = [None] * size
    dist.all_gather_object(results, result)
    if rank == 0:
        print(json.dumps({"delta": max(r["delta"] for r in results), "seconds": max(r["seconds"] for r in results),
                          "cpu_seconds": max(r["cpu_seconds"] for r in results), "last": result["last"]}))
    dist.destroy_process_group()


def child(kind: str, context: int, size: int, shape: dict | None = None) -> None:
    """Print one cell (``shape``: arguments of ``bench_prefill.build``)."""
    if size == 1:
        torch.set_num_threads(1)
        print(json.dumps(measure(build(kind, **(shape or {})), kind, context, (0, 1), shape)))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(size, port, kind, context, shape), nprocs=size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CONTEXT", "CP"))
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--cp", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    rows = []
    for kind in ("dense", "hybrid"):
        for context in args.contexts:
            cells, lasts = [], []
            for size in args.cp:
                result = subprocess.run([sys.executable, __file__, "--child", kind, str(context), str(size)],
                                        check=True, capture_output=True, text=True, env=env)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                cells += [f"{r['delta']:.0f}", f"{r['seconds']:.2f}"]
                lasts.append(r["last"])
            spread = max(lasts) - min(lasts)
            rows.append((kind, context, *cells, f"{spread:.1e}"))
    print(f"torch {torch.__version__}, one thread per rank, dim {DIM}, depth 4, vocab {VOCAB}\n")
    headers = [h for size in args.cp for h in (f"cp {size} MiB", f"cp {size} s")]
    print(format_table(["model", "context", *headers, "last out spread"], rows))


if __name__ == "__main__":
    main()
