"""Prefill peak memory and time vs context: one pass vs chunked (``omnikit.models.prefill``).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_prefill.py [--contexts 4096 8192 16384]``;
the long-context curves of docs/long_context.md use a smaller width, ``--dim 32 --vocab 1024``, and
``--json FILE`` to keep every point (runs append to it; ``--plot`` draws all points of the file;
``--contexts`` with no value only plots).
Each measurement runs in a fresh process and reports the growth of its peak resident memory during
the prefill (model and prompt are allocated before the baseline). Two small models of the same
width: a dense decoder LM (all full attention) and a hybrid stack (3 Gated DeltaNet blocks per
full-attention block). One pass keeps every position's activations (and, for the LM, logits);
chunked keeps a chunk's, plus the KV cache, which grows with the context in both.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import format_table, plot_memory_time, pyplot

from omnikit.layers import DecoderConfig
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.models import CausalLM, prefill

DIM, DEPTH, VOCAB = 64, 4, 4096
KINDS = ("dense", "hybrid")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(kind: str, dim: int = DIM, vocab: int = VOCAB, depth: int = DEPTH, heads: int | None = None,
          interval: int = 4) -> torch.nn.Module:
    """Heads of 16 (``dim / 16`` query heads unless ``heads`` is given, half as many key/value heads), ``depth``
    blocks; the hybrid's every ``interval``-th block is full attention, the others Gated DeltaNet."""
    torch.manual_seed(0)
    heads = heads or dim // 16
    shape = {"dim": dim, "depth": depth, "num_heads": heads, "num_kv_heads": max(1, heads // 2), "head_dim": 16}
    if kind == "dense":
        return CausalLM(DecoderConfig(**shape, vocab_size=vocab)).eval()
    config = HybridConfig(**shape, linear_heads=heads, linear_head_dim=16, linear_v_heads=heads, linear_v_head_dim=16,
                          linear_backend="torch", full_attention_interval=interval)
    return HybridDecoder(config).eval()


def child(context: int, kind: str, chunk: int, dim: int = DIM, vocab: int = VOCAB, **shape: int) -> None:
    """Print the peak memory growth, seconds and output sum of one prefill (``chunk`` 0: one pass);
    ``shape``: more arguments of :func:`build`."""
    model = build(kind, dim, vocab, **shape)
    prompt = torch.randint(0, vocab, (1, context)) if kind == "dense" else torch.randn(1, context, dim)
    base = peak_mib()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode(), model.streaming(1):
        out = model(prompt)[:, -1] if chunk == 0 else prefill(model, prompt, chunk=chunk)
    print(json.dumps({"delta": peak_mib() - base, "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu, "sum": float(out.sum())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=5, metavar=("CONTEXT", "KIND", "CHUNK", "DIM", "VOCAB"))
    parser.add_argument("--contexts", type=int, nargs="*", default=[4096, 8192, 16384],
                        help="none: measure nothing, plot the points of --json")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--no-one-pass", action="store_true", help="measure the chunked prefill only")
    parser.add_argument("--no-chunked", action="store_true", help="measure the one-pass prefill only")
    parser.add_argument("--json", help="append every point to this JSON file (and plot all of its points)")
    parser.add_argument("--plot", help="also save memory and time vs context as this PNG")
    args = parser.parse_args()
    if args.child:
        context, kind, chunk, dim, vocab = args.child
        child(int(context), kind, int(chunk), int(dim), int(vocab))
        return
    rows = []
    points = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else []
    for kind in args.kinds:
        for context in args.contexts:
            sums = []
            for chunk in [c for c, skip in ((0, args.no_one_pass), (args.chunk, args.no_chunked)) if not skip]:
                result = subprocess.run([sys.executable, __file__, "--child", str(context), kind, str(chunk),
                                         str(args.dim), str(args.vocab)], check=True, capture_output=True, text=True)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                sums.append(r["sum"])
                points.append({"kind": kind, "chunk": chunk, "context": context, "dim": args.dim, **r})
                how = "one pass" if chunk == 0 else f"chunks of {chunk}"
                rows.append((kind, context, how, f"{r['delta']:.0f}", f"{r['seconds']:.2f}"))
                print(rows[-1], flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(points, indent=1))
            if len(sums) == 2:
                rows.append((kind, context, "|last out| diff", f"{abs(sums[0] - sums[1]):.1e}", ""))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dim {args.dim}, depth {DEPTH}, "
          f"vocab {args.vocab}\n")
    print(format_table(["model", "context", "how", "peak memory growth (MiB)", "time (s)"], rows))
    if args.plot:
        curves: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
        for p in sorted(points, key=lambda p: p["context"]):
            curves.setdefault((p["kind"], p["chunk"]), []).append((p["context"], p["delta"], p["seconds"]))
        plot(curves, args.plot)


def plot(curves: dict[tuple[str, int], list[tuple[int, float, float]]], path: str) -> None:
    draw({f"{kind}, {'one pass' if chunk == 0 else f'chunks of {chunk}'}": ("-" if chunk == 0 else "--", points)
          for (kind, chunk), points in curves.items()}, path)


def draw(curves: dict[str, tuple[str, list[tuple[int, float, float]]]], path: str,
         memory_title: str = "peak memory growth (MiB)") -> None:
    """Memory and time vs context on log axes: ``curves`` maps a label to a line style and its
    ``(context, MiB, seconds)`` points."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
    for label, (style, points) in curves.items():
        contexts, memory, seconds = zip(*points)
        plot_memory_time(axes, contexts, memory, seconds, style, label)
    for ax, title in zip(axes, (memory_title, "time (s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_title(title)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the curves, not over them
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
