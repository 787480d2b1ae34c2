"""MoE layer vs a dense SwiGLU of equal active width vs transformers' fastest experts, side by side.

    python benchmarks/bench_moe.py                      # issue-5 shape: 2048 tokens, dim 1024, 64x512, top-8
    python benchmarks/bench_moe.py --rounds 15 --plot docs/img/moe_expert_load.png
    python benchmarks/bench_moe.py --layouts ragged padded      # also the other CPU expert layouts
    python benchmarks/bench_moe.py --onednn-variants    # also the experts on MKL only / on oneDNN at any size
    python benchmarks/bench_moe.py --device cuda --dtype bfloat16 --tokens 16384   # on a GPU
    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 python benchmarks/bench_moe.py

The last form keeps freed memory in the process (no mmap/munmap of every large buffer), which
removes the page-fault cost that dominates the non-GEMM time of every contender on the CPU.

Every contender runs on the same input in the same process; rounds are interleaved and the
table reports the median time of each, the median of the per-round ratios (robust to the
machine's load drifting during the run) and the share of the machine's matmul rate reached (MFU;
the MoE does the dense layer's FLOPs). ``torch.set_num_threads(--threads)``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Callable, Iterator

import torch
from common import format_table, interleaved_samples, matmul_flops_per_second
from torch import nn

from omnikit.layers.mlp import SwiGLU
from omnikit.moe import MoE, MoEConfig, grouped, plot_expert_load
from omnikit.moe.grouped import pair_experts
from omnikit.utils.precision import cast_model


class OneDNNThresholds(nn.Module):
    """``model`` whose timed calls (forward and backward: see :func:`limits`) run with the experts' oneDNN
    thresholds set to ``min_rows`` / ``min_macs``."""

    def __init__(self, model: nn.Module, min_rows: int, min_macs: int) -> None:
        super().__init__()
        self.model, self.limits = model, (min_rows, min_macs)

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.model(*args, **kwargs)


@contextlib.contextmanager
def limits(model: nn.Module) -> Iterator[None]:
    """The oneDNN thresholds of a :class:`OneDNNThresholds` model in force (other models: nothing changes)."""
    saved = grouped.ONEDNN_MIN_ROWS, grouped.ONEDNN_MIN_MACS
    if isinstance(model, OneDNNThresholds):
        grouped.ONEDNN_MIN_ROWS, grouped.ONEDNN_MIN_MACS = model.limits
    try:
        yield
    finally:
        grouped.ONEDNN_MIN_ROWS, grouped.ONEDNN_MIN_MACS = saved


def build(args: argparse.Namespace) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    cfg = MoEConfig(dim=args.dim, num_experts=args.experts, top_k=args.top_k, expert_hidden=args.hidden)
    models: dict[str, nn.Module] = {
        "dense SwiGLU": SwiGLU(args.dim, args.top_k * args.hidden),
        "omnikit MoE": MoE(cfg),
    }
    for layout in args.layouts:
        other = MoE(MoEConfig(**{**vars(cfg), "expert_gemm": layout}))
        other.load_state_dict(models["omnikit MoE"].state_dict())
        models[f"omnikit MoE ({layout})"] = other
    if args.onednn_variants:
        models["omnikit MoE, experts on MKL"] = OneDNNThresholds(models["omnikit MoE"], 2**62, 0)
        models["omnikit MoE, experts on oneDNN at any size"] = OneDNNThresholds(models["omnikit MoE"], 1, 0)
    try:
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
    except ImportError:
        return models
    hf = Qwen3MoeSparseMoeBlock(Qwen3MoeConfig(
        hidden_size=args.dim, moe_intermediate_size=args.hidden, num_experts=args.experts,
        num_experts_per_tok=args.top_k, norm_topk_prob=True, experts_implementation="grouped_mm",
    ))
    ours = models["omnikit MoE"]
    with torch.no_grad():
        hf.gate.weight.copy_(ours.router.weight)
        hf.experts.gate_up_proj.copy_(ours.experts.gate_up)
        hf.experts.down_proj.copy_(ours.experts.down)
    models["transformers grouped_mm"] = hf
    return models


def forward_only(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad(), limits(model):
            model(x)

    return run


def forward_backward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    params = list(model.parameters())

    def run() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        with limits(model):
            model(x).sum().backward()

    return run


def table(title: str, times: dict[str, list[float]], flops: float, peak: float, ref: str | None) -> str:
    """Median ms, median per-round ratios to the dense layer and to transformers, and MFU."""

    def ratio(ts: list[float], other: str | None) -> str:
        if other is None:
            return "-"
        return f"{statistics.median(a / b for a, b in zip(ts, times[other])):.2f}"

    rows = [
        [key, f"{1000 * statistics.median(ts):.1f}", ratio(ts, "dense SwiGLU"), ratio(ts, ref),
         f"{flops / statistics.median(ts) / peak:.0%}"]
        for key, ts in times.items()
    ]
    return f"**{title}**\n\n" + format_table(["layer", "median ms", "x dense", "x transformers", "MFU"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layouts", nargs="*", default=[], choices=["ragged", "padded", "paired"],
                        help="also time the MoE with these expert_gemm layouts (its own row is 'auto')")
    parser.add_argument("--onednn-variants", action="store_true",
                        help="also the MoE with its expert products kept on MKL, and on oneDNN at every size")
    parser.add_argument("--plot", default=None, help="save the expert-load plot of the benchmark batch here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    peak = matmul_flops_per_second(dtype=dtype, device=args.device, repeats=9)
    models = build(args)
    for model in models.values():
        cast_model(model.to(args.device), dtype)
    x = torch.randn(1, args.tokens, args.dim, generator=torch.Generator().manual_seed(1)).to(args.device, dtype)
    xg = x.clone().requires_grad_()
    ref = "transformers grouped_mm" if "transformers grouped_mm" in models else None
    print(f"tokens {args.tokens}, dim {args.dim}, {args.experts} experts x {args.hidden}, top-{args.top_k}, "
          f"{args.dtype} on {args.device}, {args.threads} threads, {args.rounds} interleaved rounds, "
          f"matmul peak {peak / 1e9:.0f} GFLOP/s (MFU is relative to it), "
          f"torch {torch.__version__}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}\n")
    flops = 6 * args.tokens * args.top_k * args.hidden * args.dim  # three GEMMs of the active width
    fwd = interleaved_samples({k: forward_only(m, x) for k, m in models.items()}, repeats=args.rounds, warmup=1)
    print(table("forward", fwd, flops, peak, ref) + "\n")
    train = {k: forward_backward(m, xg) for k, m in models.items()}
    fwd_bwd = interleaved_samples(train, repeats=args.rounds, warmup=1)
    print(table("forward + backward", fwd_bwd, 3 * flops, peak, ref) + "\n")
    with torch.no_grad():
        _, aux = models["omnikit MoE"](x, return_aux=True)
    rows = aux.tokens_per_expert
    paired_slots = pair_experts(rows.tolist())[0][-1].rows.stop
    print(f"expert load: min {int(rows.min())}, max {int(rows.max())}, mean {rows.float().mean():.0f} rows; padding "
          f"overhead: padded layout {args.experts * int(rows.max()) / int(rows.sum()) - 1:.1%}, "
          f"paired layout {paired_slots / int(rows.sum()) - 1:.1%}")
    if args.plot:
        print("plot:", plot_expert_load(rows, args.plot, title="Expert load, benchmark batch (random router)"))


if __name__ == "__main__":
    main()
