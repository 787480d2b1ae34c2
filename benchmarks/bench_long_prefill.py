"""Prefill peak memory and time vs context, 4K to 256K: one pass, chunked, context parallel over 2 and 4 ranks.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_long_prefill.py --json FILE [--contexts 4096 ...]
[--kinds dense hybrid] [--modes one chunked cp2 cp4] [--plot PNG]``. Every point runs in fresh processes
(``bench_prefill.child`` for one pass and chunked, ``bench_cp.child`` for cp: gloo ranks, one thread
each) and is appended to ``FILE`` as soon as it is measured, so a long run can be stopped and resumed
(points already in the file are skipped); ``--contexts`` with no value only plots the file.

``chunked_masked`` (not in the default modes) is the chunked prefill with the mask-free attention
switched off: every chunk attends through a ``(chunk x context)`` mask, as before it.

Both decoders have the same small size (:data:`SHAPE`): width 64, 2 blocks, one query and one key/value
head of 16, vocabulary 256. ``dense`` is a decoder LM with two full-attention blocks, ``hybrid`` a Gated
DeltaNet block then a full-attention block. Memory is the growth of the peak resident set during the
prefill (for cp the worst rank: per-rank memory is the point); time is wall time, which for cp on a
machine with fewer free cores than ranks measures contention, not the split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import bench_cp
import bench_prefill
from common import format_table

from omnikit.layers import attention_backends

#: The width, depth, heads and vocabulary shared by both decoders (arguments of ``bench_prefill.build``).
SHAPE = {"dim": 64, "vocab": 256, "depth": 2, "heads": 1, "interval": 2}
MODES = ("one", "chunked", "cp2", "cp4", "chunked_masked")
LABELS = {"one": "one pass", "chunked": "chunks of {chunk}", "cp2": "cp 2", "cp4": "cp 4",
          "chunked_masked": "chunks of {chunk}, masked (before)"}
CONTEXTS = [4096 * 2**i for i in range(7)]  # 4K .. 256K


def point(kind: str, mode: str, context: int, chunk: int) -> None:
    """Measure one point in this process (cp: spawn the ranks) and print it as JSON."""
    if mode.startswith("cp"):
        bench_cp.child(kind, context, int(mode[2:]), SHAPE)
        return
    if mode == "chunked_masked":  # the path before the mask-free attention: a (chunk x context) mask per layer
        attention_backends.block_attention_serves = lambda *args, **kwargs: False
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_prefill.child(context, kind, 0 if mode == "one" else chunk, **SHAPE)
    print(out.getvalue().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--point", nargs=4, metavar=("KIND", "MODE", "CONTEXT", "CHUNK"))
    parser.add_argument("--json", required=False, help="points so far; new points are appended")
    parser.add_argument("--contexts", type=int, nargs="*", default=CONTEXTS)
    parser.add_argument("--kinds", nargs="+", default=["dense", "hybrid"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:4]))
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--plot", help="save memory and time vs context of every point of --json as this PNG")
    args = parser.parse_args()
    if args.point:
        kind, mode, context, chunk = args.point
        point(kind, mode, int(context), int(chunk))
        return
    path = Path(args.json)
    points = json.loads(path.read_text()) if path.is_file() else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for context in args.contexts:
        for kind in args.kinds:
            for mode in args.modes:
                if any((p["kind"], p["mode"], p["context"]) == (kind, mode, context) for p in points):
                    continue
                result = subprocess.run([sys.executable, __file__, "--point", kind, mode, str(context),
                                         str(args.chunk)], check=True, capture_output=True, text=True, env=env)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                points.append({"kind": kind, "mode": mode, "context": context, "chunk": args.chunk, **SHAPE, **r})
                print(points[-1], flush=True)
                path.write_text(json.dumps(points, indent=1))
    print(table(points))
    if args.plot:
        plot(points, args.plot)


def table(points: list[dict]) -> str:
    """Markdown: one row per decoder and context, one cell per mode: peak growth MiB, wall s (CPU s)."""
    modes = [m for m in MODES if any(p["mode"] == m for p in points)]
    rows = []
    for kind in ("dense", "hybrid"):
        for context in sorted({p["context"] for p in points}):
            cells = {p["mode"]: p for p in points if (p["kind"], p["context"]) == (kind, context)}
            if cells:
                rows.append((kind, f"{context // 1024}K", *(
                    "" if m not in cells else f"{cells[m]['delta']:,.0f} MiB, {cells[m]['seconds']:.1f} s"
                    + (f" ({cells[m]['cpu_seconds']:.1f})" if "cpu_seconds" in cells[m] else "") for m in modes)))
    return format_table(["model", "context", *(LABELS[m].format(chunk=points[0]["chunk"]) for m in modes)], rows)


def plot(points: list[dict], path: str) -> None:
    """Peak memory growth and time vs context, one curve per decoder and mode."""
    styles = {"one": "-", "chunked": "--", "cp2": ":", "cp4": "-.", "chunked_masked": "--"}
    curves = {}
    for kind in ("dense", "hybrid"):
        for mode, style in styles.items():
            mine = sorted((p for p in points if (p["kind"], p["mode"]) == (kind, mode)), key=lambda p: p["context"])
            if mine:
                label = f"{kind}, {LABELS[mode].format(chunk=mine[0]['chunk'])}"
                curves[label] = (style, [(p["context"], max(p["delta"], 1), p["seconds"]) for p in mine])
    bench_prefill.draw(curves, path, "peak memory growth (MiB, worst rank)")


if __name__ == "__main__":
    main()
