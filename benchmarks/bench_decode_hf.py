"""Greedy decoding, omnikit vs transformers' ``generate`` on the same checkpoint: eager, and compiled static cache.

Usage (one thread; process CPU time, because on the shared 2-core machine wall time mostly measures waiting)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_decode_hf.py [--repeats 9] [--dim 128] [--batch 1]
        [--new-tokens 32] [--no-compile] [--old-rev REV]

A Qwen3 LM (4 layers of width ``--dim``, GQA 4/2 heads, vocabulary 1024 at width <= 128 and 8192 above:
the regression guard's LM at the defaults) is saved by transformers and loaded with ``load_hf``. Each
call generates ``--new-tokens`` greedy tokens after a 16-token prompt (the whole call is timed,
prefill included, as ``generate`` is); every variant's tokens are checked equal to transformers'.
Variants: transformers' ``generate`` (dynamic cache, eager), omnikit's ``generate`` eager (growable
cache), and omnikit with ``cache="static", compile=True`` (every decode step one
``torch.compile(fullgraph=True)`` graph, Inductor's default mode). The compile (first call) is timed
apart; steady-state times are medians of interleaved rounds after it, the A/A row times
transformers twice per round (this run's noise). Ratios: transformers' time / omnikit's (> 1: omnikit
faster), and per generated token. ``--old-rev`` adds the same two omnikit variants at that git revision
(a before/after table in the same process and rounds); ``--autotune`` adds omnikit compiled with
``mode="max-autotune-no-cudagraphs"``; ``--compile-options`` adds omnikit compiled with torch's plain
defaults (``compile={}``) and with only Inductor's C++ wrapper, beside ``compile=True`` (which on the CPU
also turns size asserts off: ``omnikit.models.decode_cache.CPU_STEP_OPTIONS``). Each such variant runs
its own copy of the model.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import format_table, interleaved_samples

from omnikit.convert import load_hf

AUTOTUNE = "max-autotune-no-cudagraphs"  # Inductor's GEMM templates tried against the library GEMMs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--old-rev", default=None, help="also time omnikit at this git revision")
    parser.add_argument("--autotune", action="store_true", help=f"also compile with mode={AUTOTUNE!r}")
    parser.add_argument("--compile-options", action="store_true",
                        help="also compile with compile={} and with only options={'cpp_wrapper': True}")
    args = parser.parse_args()
    variants: dict[str, object] = {}  # more compiled variants of this checkout: label -> compile=
    if args.autotune:
        variants[AUTOTUNE] = AUTOTUNE
    if args.compile_options:
        variants["torch defaults (compile={})"] = {}
        variants["cpp_wrapper only"] = {"options": {"cpp_wrapper": True}}
    vocab = 1024 if args.dim <= 128 else 8192
    config = transformers.Qwen3Config(hidden_size=args.dim, intermediate_size=args.dim * 11 // 4, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=args.dim // 4,
                                      vocab_size=vocab)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(config).eval()
    ids = torch.randint(0, vocab, (args.batch, 16))
    new = args.new_tokens
    models = {}
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        models["omnikit"] = load_hf(directory).eval()
        copies = {label: load_hf(directory).eval() for label in variants}
        if args.old_rev:
            from bench_before_after import import_old

            old = import_old(args.old_rev, Path(directory))
            models["omnikit old"] = importlib.import_module(f"{old.__name__}.convert").load_hf(directory).eval()
    theirs = torch.no_grad()(lambda: hf.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False))
    reference = theirs()[:, 16:]
    fns = {"transformers generate": theirs}
    compile_s = {}
    torch._dynamo.reset()
    for label, lm in reversed(models.items()):
        fns[f"{label} eager"] = lambda lm=lm: lm.generate(ids, max_new_tokens=new)
        if args.no_compile:
            continue

        def compiled(lm: torch.nn.Module = lm) -> object:
            return lm.generate(ids, max_new_tokens=new, cache="static", compile=True)

        start = time.perf_counter()
        compiled()
        compile_s[label] = time.perf_counter() - start
        fns[f"{label} static cache + compile"] = compiled
    for variant, option in variants.items():
        def compiled_variant(lm: torch.nn.Module = copies[variant], option: object = option) -> object:
            return lm.generate(ids, max_new_tokens=new, cache="static", compile=option)

        start = time.perf_counter()
        compiled_variant()
        compile_s[f"omnikit {variant}"] = time.perf_counter() - start
        fns[f"omnikit static cache + compile, {variant}"] = compiled_variant
    for name, fn in fns.items():
        out = fn()
        tokens = out[:, 16:] if isinstance(out, torch.Tensor) else out.tokens
        if not torch.equal(tokens, reference):
            raise AssertionError(f"{name}: greedy tokens differ from transformers'")
    fns["transformers again (A/A)"] = theirs
    samples = interleaved_samples(fns, repeats=args.repeats, warmup=1, clock=time.process_time)
    base = statistics.median(samples["transformers generate"])
    rows = []
    for name, values in samples.items():
        med = statistics.median(values)
        rows.append([name, f"{med * 1e3:.1f}", f"{med * 1e3 / new:.2f}", f"{base / med:.2f}x"])
    print(f"Qwen3 LM {args.dim} x 4 layers, vocab {vocab}, batch {args.batch}, {new} new tokens after 16; "
          f"{torch.get_num_threads()} thread(s), {args.repeats} rounds, process CPU time"
          + "".join(f"; {label} first compiled call (compile) {t:.1f} s wall" for label, t in compile_s.items()))
    print(format_table(["variant", "ms / generate", "ms / token", "speed vs transformers"], rows))


if __name__ == "__main__":
    main()
