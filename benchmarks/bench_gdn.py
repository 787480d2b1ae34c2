"""Gated DeltaNet on the CPU: omnikit against transformers' torch path, and a hybrid stack against full attention.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_gdn.py [--length 1024] [--contexts 4096 8192 ...]``

1. Layer and kernel, same weights and inputs, in one process (interleaved repeats, medians): omnikit's
   ``GatedDeltaNet`` (fused Qwen3-Next projections) against transformers' ``Qwen3NextGatedDeltaNet`` (its
   torch fallbacks: ``torch_chunk_gated_delta_rule``, ``causal_conv1d_fn``), forward alone (prefill) and
   forward + backward (a training step); then the bare chunked rule against transformers'
   ``torch_chunk_gated_delta_rule``. A tiny-but-real config: the published head sizes (``d_k = d_v = 128``,
   two value heads per key head), fewer heads and a smaller width. Outputs are checked equal first.
2. Prefill time and peak memory against context length: a 4-layer hybrid stack (3 DeltaNet : 1 full
   attention) against the same stack with full attention in every layer (SDPA), each prefill in a fresh
   process after a short warm-up, one timed call; memory is the peak resident set above the one before the
   call (sampled every millisecond). A plot is written beside the table.

flash-linear-attention is used by ``GatedDeltaNet`` on CUDA when importable; this script times the CPU paths.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from common import format_table, interleaved_medians

from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.layers.linear_attention import GatedDeltaNet, gated_delta_rule_chunked, l2_normalize

SMALL = dict(dim=64, depth=4, num_heads=4, num_kv_heads=2, head_dim=16, linear_heads=2, linear_head_dim=16,
             linear_v_heads=4, linear_v_head_dim=16, norm="rmsnorm_zero_centered", attn_output_gate=True, rotary_dim=4)


def _hf_layer(dim: int, k_heads: int, v_heads: int, head: int):
    from transformers import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    config = Qwen3NextConfig(hidden_size=dim, linear_num_key_heads=k_heads, linear_num_value_heads=v_heads,
                             linear_key_head_dim=head, linear_value_head_dim=head, num_hidden_layers=1)
    return Qwen3NextGatedDeltaNet(config, 0)


def _ours_like(hf) -> GatedDeltaNet:
    ours = GatedDeltaNet(hf.hidden_size, hf.num_k_heads, hf.head_k_dim, num_v_heads=hf.num_v_heads,
                         v_head_dim=hf.head_v_dim, projection="fused", backend="torch")
    with torch.no_grad():
        for mine, theirs in ((ours.qkvz, hf.in_proj_qkvz), (ours.ba, hf.in_proj_ba), (ours.conv, hf.conv1d),
                             (ours.norm, hf.norm), (ours.out, hf.out_proj)):
            mine.weight.copy_(theirs.weight)
        ours.A_log.copy_(hf.A_log)
        ours.dt_bias.copy_(hf.dt_bias)
    return ours


def layer_table(length: int, repeats: int) -> str:
    from transformers.models.qwen3_next.modeling_qwen3_next import torch_chunk_gated_delta_rule

    torch.manual_seed(0)
    dim, k_heads, v_heads, head = 512, 4, 8, 128
    hf = _hf_layer(dim, k_heads, v_heads, head)
    ours = _ours_like(hf)
    x = torch.randn(1, length, dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x), atol=1e-4, rtol=1e-4)
    xg = x.clone().requires_grad_()

    def step(layer):
        def run():
            layer.zero_grad(set_to_none=True)
            layer(xg).square().mean().backward()
        return run

    def prefill(layer):
        def run():
            with torch.no_grad():
                layer(x)
        return run

    g = torch.Generator().manual_seed(1)
    q, k = (l2_normalize(torch.randn(1, v_heads, length, head, generator=g)) for _ in range(2))
    v = torch.randn(1, v_heads, length, head, generator=g)
    decay, beta = -torch.rand(1, v_heads, length, generator=g), torch.rand(1, v_heads, length, generator=g)
    leaves = [t.clone().requires_grad_() for t in (q * head**-0.5, k, v, decay, beta)]
    theirs_layout = [t.transpose(1, 2).detach().clone().requires_grad_() for t in (q, k, v)]
    theirs_layout += [t.transpose(1, 2).detach().clone().requires_grad_() for t in (decay, beta)]
    torch.testing.assert_close(gated_delta_rule_chunked(*leaves)[0].transpose(1, 2),
                               torch_chunk_gated_delta_rule(*theirs_layout)[0], atol=1e-4, rtol=1e-4)

    def kernel_step(fn, tensors):
        def run():
            fn(*tensors)[0].square().mean().backward()
        return run

    fns = {
        "layer prefill, omnikit": prefill(ours), "layer prefill, transformers": prefill(hf),
        "layer fwd+bwd, omnikit": step(ours), "layer fwd+bwd, transformers": step(hf),
        "chunked rule fwd+bwd, omnikit": kernel_step(gated_delta_rule_chunked, leaves),
        "chunked rule fwd+bwd, transformers": kernel_step(torch_chunk_gated_delta_rule, theirs_layout),
    }
    times = interleaved_medians(fns, repeats=repeats, warmup=1)
    rows = []
    for what in ("layer prefill", "layer fwd+bwd", "chunked rule fwd+bwd"):
        a, b = times[f"{what}, omnikit"], times[f"{what}, transformers"]
        rows.append([what, f"{a * 1e3:.1f}", f"{b * 1e3:.1f}", f"{a / b:.2f}"])
    title = (f"Gated DeltaNet, dim {dim}, {k_heads} key / {v_heads} value heads of {head}, 1 x {length} tokens, "
             f"chunk 64, float32, {torch.get_num_threads()} thread(s)")
    return title + "\n\n" + format_table(["path", "omnikit (ms)", "transformers (ms)", "omnikit / transformers"], rows)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(kind: str, length: int) -> None:
    """One prefill in this process (after a short warm-up): prints JSON with its seconds and the peak
    resident memory above the resident memory before it, sampled every millisecond by a thread."""
    torch.manual_seed(0)
    config = HybridConfig(**SMALL, full_attention_interval=4 if kind == "hybrid" else 1, linear_backend="torch")
    model = HybridDecoder(config).eval()
    with torch.no_grad():
        model(torch.randn(1, 256, SMALL["dim"]))
    x = torch.randn(1, length, SMALL["dim"])
    base, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"seconds": seconds, "peak_mib": max(peak[0] - base, 0) / 2**20}))


def context_table(contexts: list[int], full_max: int, plot: Path | None) -> str:
    results: dict[str, dict[int, dict[str, float]]] = {"hybrid": {}, "full": {}}
    for length in contexts:
        for kind in results:
            if kind == "full" and length > full_max:
                continue
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(length)], capture_output=True,
                                 text=True, check=True)
            results[kind][length] = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    for length in contexts:
        h, f = results["hybrid"][length], results["full"].get(length)
        rows.append([length, f"{h['seconds']:.2f}", f"{f['seconds']:.2f}" if f else "-",
                     f"{h['seconds'] / f['seconds']:.2f}" if f else "-", f"{h['peak_mib']:.0f}",
                     f"{f['peak_mib']:.0f}" if f else "-"])
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for kind, label in (("hybrid", "hybrid 3:1 (Gated DeltaNet)"), ("full", "full attention")):
            lengths = sorted(results[kind])
            axes[0].plot(lengths, [results[kind][n]["seconds"] for n in lengths], "o-", label=label)
            axes[1].plot(lengths, [results[kind][n]["peak_mib"] for n in lengths], "o-", label=label)
        for ax, ylabel in zip(axes, ("prefill seconds", "peak memory above the model (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("context (tokens)")
            ax.set_ylabel(ylabel)
            ax.legend()
        fig.suptitle(f"4-layer stack, dim {SMALL['dim']}, CPU float32, 1 thread")
        fig.tight_layout()
        fig.savefig(plot, dpi=100)
    headers = ["context", "hybrid (s)", "full attention (s)", "hybrid / full", "hybrid peak (MiB)",
               "full peak (MiB)"]
    return format_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--contexts", type=int, nargs="*", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--full-max", type=int, default=32768, help="longest context run with full attention")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/bench_gdn_context.png"))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(layer_table(args.length, args.repeats), end="\n\n")
    if args.contexts:
        print(context_table(args.contexts, args.full_max, args.plot))


if __name__ == "__main__":
    main()
