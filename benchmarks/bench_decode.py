"""Decode tokens/s of the Thinker and of the Talker: eager dynamic cache vs eager and compiled static cache.

Usage:
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_decode.py [--repeats 5]
    PYTHONPATH=. python benchmarks/bench_decode.py --device cuda --dtype bfloat16   # CUDA graphs

Rows: a Thinker (``Thinker``, dim 256, 4 layers, GQA 4/2 heads, M-RoPE, vocab 2048) decoding
``--new-tokens`` greedy tokens after a 32-token prompt, and a Talker (``"mtp"`` strategy: a
4-layer temporal decoder, dim 256, and a 2-layer code predictor, dim 128, over 8 codebooks of 256)
decoding ``--new-tokens`` frames from Thinker reply states. Columns: the growable cache in eager
mode (what ``generate`` / ``stream_codes`` do by default), the static cache in eager mode, and the
static cache with every decode step compiled (``torch.compile(fullgraph=True)``; on CUDA in
``mode="reduce-overhead"``, i.e. CUDA graphs). Only the decode loop is timed: the clock starts
when the first token (frame) comes out, after the prompt. The variants run round-robin, medians of
``--repeats`` rounds after one warm-up round; the compile time (first call) is reported apart.

``--profile`` also prints, for the Thinker, the share of an eager decode step spent in Python and
dispatch (wall time of the step minus the time of its operators as the profiler records them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from common import format_table

from omnikit.fusion import Thinker
from omnikit.layers import DecoderConfig
from omnikit.speech import Talker, TalkerConfig


def thinker_case(args: argparse.Namespace) -> tuple[str, Callable[[dict], Iterator[object]]]:
    model = Thinker(DecoderConfig(dim=256, depth=4, num_heads=4, num_kv_heads=2, mlp_hidden=704, vocab_size=2048,
                                  qkv_bias=True, mrope_sections=(8, 12, 12)))
    model = model.to(args.device, args.dtype).eval()
    ids = torch.randint(8, 2048, (args.batch, 32), device=args.device)  # no placeholder ids
    positions = torch.arange(32, device=args.device).expand(3, args.batch, -1)

    def run(options: dict) -> Iterator[object]:
        return model.stream_generate(ids, positions=positions, max_new_tokens=args.new_tokens, **options)

    return f"Thinker (dim 256, 4 layers, batch {args.batch}), tokens/s", run


def talker_case(args: argparse.Namespace) -> tuple[str, Callable[[dict], Iterator[object]]]:
    config = TalkerConfig.from_flat(dim=256, depth=4, num_heads=4, num_kv_heads=2, thinker_dim=256, num_codebooks=8,
                                    codebook_size=256, strategy="mtp", predictor_dim=128, predictor_depth=2,
                                    predictor_heads=4)
    model = Talker(config).to(args.device, args.dtype).eval()
    text = torch.randn(args.batch, 16, 256, device=args.device, dtype=args.dtype)
    context = torch.randn(args.batch, 32, 256, device=args.device, dtype=args.dtype)

    def run(options: dict) -> Iterator[object]:
        return model.stream_codes(iter(text.unbind(1)), batch_size=args.batch, context=context,
                                  max_frames=args.new_tokens, min_frames=args.new_tokens, **options)

    return f"Talker mtp (dim 256, 4 layers + predictor, 8 codebooks, batch {args.batch}), frames/s", run


def decode_seconds(stream: Iterator[object]) -> float:
    """Seconds from the first yielded token to the last (the decode loop without the prompt)."""
    next(stream)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in stream:
        pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def python_share(run: Callable[[dict], Iterator[object]]) -> float:
    """Fraction of an eager decode loop's wall time not spent inside the operators' kernels (CPU)."""
    from torch.profiler import ProfilerActivity, profile

    decode_seconds(run({}))  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = decode_seconds(run({}))
    kernels = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::mm")
                  or e.key.startswith("aten::addmm") or "attention" in e.key or e.key.startswith("aten::bmm"))
    return 1 - kernels / 1e6 / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    mode = "reduce-overhead" if args.device.startswith("cuda") else True
    variants = {
        "eager, dynamic cache": {},
        "eager, static cache": {"cache": "static"},
        "compiled, static cache": {"cache": "static", "compile": mode},
    }
    rows = []
    for case in (thinker_case, talker_case):
        torch.manual_seed(0)
        torch._dynamo.reset()
        label, run = case(args)
        start = time.perf_counter()
        decode_seconds(run(variants["compiled, static cache"]))
        compile_s = time.perf_counter() - start
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats + 1):  # round-robin; the first round warms up
            for name, options in variants.items():
                seconds = decode_seconds(run(options))
                if repeat:
                    samples[name].append(seconds)
        rate = {name: (args.new_tokens - 1) / statistics.median(s) for name, s in samples.items()}
        base = rate["eager, dynamic cache"]
        rows.append([label] + [f"{rate[n]:.0f} ({rate[n] / base:.2f}x)" for n in variants] + [f"{compile_s:.0f}"])
        print(rows[-1], flush=True)
        if args.profile and case is thinker_case:
            print(f"Thinker eager dynamic decode: {100 * python_share(run):.0f}% of the wall time outside the "
                  "matmul/attention kernels", flush=True)
    where = f"{args.device}, {str(args.dtype).removeprefix('torch.')}"
    compiled = "compiled, static cache" + (f" ({mode})" if isinstance(mode, str) else "")
    print(format_table([f"case ({where})", "eager, dynamic cache", "eager, static cache", compiled, "compile (s)"],
                       rows))


if __name__ == "__main__":
    main()
