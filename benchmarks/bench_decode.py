"""Decode tokens/s of the Thinker and of the Talker: eager dynamic cache vs eager and compiled static cache.

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_decode.py [--repeats 5] [--profile]
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

On the CPU a fourth column compiles with Inductor's ``freezing`` (weights folded into the graph as
constants, GEMMs on prepacked oneDNN weights: only for weights that no longer change).
``--profile`` (CPU) also prints, per case, the wall time of a decode step and the part of it the
profiler records inside the GEMM and attention kernels, eager and compiled: what is left is Python,
dispatch and the small element-wise operators that compiling removes or fuses.
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


KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu")


def kernel_split(run: Callable[[dict], Iterator[object]], options: dict, steps: int) -> tuple[float, float]:
    """(ms per step of wall time, ms per step inside the GEMM and attention kernels) of one profiled loop."""
    from torch.profiler import ProfilerActivity, profile

    decode_seconds(run(options))  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = decode_seconds(run(options))
    kernels = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in KERNELS) / 1e6
    return 1e3 * wall / steps, 1e3 * kernels / steps


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
    cuda = args.device.startswith("cuda")
    mode = "reduce-overhead" if cuda else True
    variants = {
        "eager, dynamic cache": {},
        "eager, static cache": {"cache": "static"},
        "compiled, static cache": {"cache": "static", "compile": mode},
    }
    if not cuda:  # Inductor's freezing: weights folded in as constants, GEMMs on prepacked oneDNN weights
        variants["compiled + freezing"] = {"cache": "static", "compile": {"options": {"freezing": True}}}
    rows, profiles = [], []
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
        if args.profile and not cuda:
            for name in ("eager, dynamic cache", "compiled, static cache"):
                wall, kernels = kernel_split(run, variants[name], args.new_tokens - 1)
                profiles.append([label.split(" (")[0], name, f"{wall:.2f}", f"{kernels:.2f}",
                                 f"{100 * (1 - kernels / wall):.0f}%"])
    where = f"{args.device}, {str(args.dtype).removeprefix('torch.')}"
    compiled = "compiled, static cache" + (f" ({mode})" if isinstance(mode, str) else "")
    headers = [compiled if name == "compiled, static cache" else name for name in variants]
    print(format_table([f"case ({where})", *headers, "compile (s)"], rows))
    if profiles:
        print()
        print(format_table(["case", "variant", "ms / step", "ms in GEMM + attention kernels", "outside them"],
                           profiles))


if __name__ == "__main__":
    main()
