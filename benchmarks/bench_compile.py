"""Compiled (``torch.compile(fullgraph=True)``, Inductor) against eager, in one run.

Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_compile.py [--repeats 5]
    PYTHONPATH=. python benchmarks/bench_compile.py --device cuda --dtype bfloat16 --batch 32   # on a GPU

Rows: the Thinker training step (forward + backward + AdamW; the optimizer step is eager in both),
the audio encoder forward, and the MoE layer forward + backward. Eager and compiled are timed
round-robin (``interleaved_medians``) so load from other jobs hits both alike; the compile time
(first call) is reported apart.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from common import format_table, interleaved_medians
from torch import nn

import omnikit
from omnikit.fusion import Thinker
from omnikit.layers import DecoderConfig
from omnikit.moe import MoE, MoEConfig
from omnikit.utils.precision import cast_model


def _on(value: object, args: argparse.Namespace) -> object:
    """A contract input moved to the benchmark's device; floating tensors also take its dtype."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(args.device, args.dtype if value.is_floating_point() else None)


def thinker_case(args: argparse.Namespace) -> tuple[str, Callable[[nn.Module], Callable[[], None]], nn.Module]:
    config = DecoderConfig(dim=256, depth=4, num_heads=4, num_kv_heads=2, mlp_hidden=704, vocab_size=2048,
                           qkv_bias=True, mrope_sections=(8, 12, 12))
    model = cast_model(Thinker(config).train(), args.dtype).to(args.device)
    ids = torch.randint(0, 2048, (args.batch, 256), device=args.device)
    ids[ids < 8] = 8  # no placeholder ids
    positions = torch.arange(256, device=args.device).expand(3, args.batch, -1)

    def step_of(runner: nn.Module) -> Callable[[], None]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step() -> None:
            logits = runner(ids, positions=positions)
            nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    return f"Thinker train step (dim 256, 4 layers, {args.batch}x256 tokens)", step_of, model


def audio_case(args: argparse.Namespace) -> tuple[str, Callable[[nn.Module], Callable[[], None]], nn.Module]:
    model = cast_model(omnikit.create_model("qwen2_5_omni_audio_tiny").eval(), args.dtype).to(args.device)
    kwargs = {key: _on(value, args) for key, value in model.contract_inputs([800] * args.batch).kwargs.items()}

    def step_of(runner: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                runner(**kwargs)
        return step

    return f"audio encoder forward (qwen2_5_omni_audio_tiny, {args.batch}x800 frames)", step_of, model


def moe_case(args: argparse.Namespace) -> tuple[str, Callable[[nn.Module], Callable[[], None]], nn.Module]:
    moe = MoE(MoEConfig(dim=256, num_experts=8, top_k=2, expert_hidden=512)).train()
    model = cast_model(moe, args.dtype).to(args.device)
    x = torch.randn(args.batch, 256, 256, device=args.device, dtype=args.dtype)

    def step_of(runner: nn.Module) -> Callable[[], None]:
        def step() -> None:
            runner(x).square().mean().backward()
            model.zero_grad(set_to_none=True)
        return step

    return f"MoE layer fwd+bwd (dim 256, 8 experts top-2, {args.batch}x256 tokens)", step_of, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    rows = []
    for case in (thinker_case, audio_case, moe_case):
        torch.manual_seed(0)
        label, step_of, model = case(args)
        torch._dynamo.reset()
        eager, compiled = step_of(model), step_of(torch.compile(model, fullgraph=True))
        start = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - start
        times = interleaved_medians({"eager": eager, "compiled": compiled}, repeats=args.repeats, warmup=1)
        rows.append([label, f"{1e3 * times['eager']:.1f}", f"{1e3 * times['compiled']:.1f}",
                     f"{times['eager'] / times['compiled']:.2f}x", f"{compile_s:.0f}"])
        print(rows[-1], flush=True)
    setting = f"{str(args.dtype).removeprefix('torch.')}, {args.device}"
    print(format_table([f"case ({setting})", "eager (ms)", "compiled (ms)", "speed-up", "compile (s)"], rows))


if __name__ == "__main__":
    main()
