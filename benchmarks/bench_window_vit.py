"""Qwen2.5-Omni vision tower: omnikit's WindowViT vs transformers' Qwen2_5OmniVisionEncoder.

Usage: python benchmarks/bench_window_vit.py [--dim 256] [--depth 4] [--repeats 5]

Same weights (converted with ``from_transformers``), same packed processor inputs (two images and a
video), forward in float32 with and without gradients, one thread, timed round-robin in one process
by the process's CPU time (``time.process_time``: on a machine shared with other jobs, wall time
mostly measures waiting for a core). The
transformers tower runs attention window by window (one SDPA call per window or frame); omnikit
lays every window out as one row of a padded batch and makes one call per block.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import format_table

from omnikit.convert import from_transformers
from omnikit.vision import patchify_frames


def cpu_time_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds per call of each function, called round-robin after one warm-up call each."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            samples[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as c
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = c.Qwen2_5OmniVisionEncoderConfig(
        depth=args.depth, hidden_size=args.dim, intermediate_size=int(args.dim * 2.67), num_heads=args.dim // 64,
        out_hidden_size=2 * args.dim,
        fullatt_block_indexes=list(range(args.depth // 4 - 1, args.depth, args.depth // 4)),
    )
    config._attn_implementation = "sdpa"
    hf = m.Qwen2_5OmniVisionEncoder(config)
    ours = from_transformers(hf)
    clips = [torch.randn(1, 1, 3, 448, 448), torch.randn(1, 1, 3, 336, 532), torch.randn(1, 8, 3, 280, 280)]
    rows = [patchify_frames(clip, torch.tensor([clip.shape[1]]), (2, 14, 14), 2) for clip in clips]
    pixels, grid = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    table = []
    for mode in ("fwd (no grad)", "fwd+bwd"):
        train = mode == "fwd+bwd"
        hf.train(train)
        ours.train(train)

        def run(fn, train=train):
            def call():
                with torch.set_grad_enabled(train):
                    out = fn()
                    if train:
                        out.square().mean().backward()
            return call

        times = cpu_time_medians({
            "transformers": run(lambda: hf(pixels, grid_thw=grid).pooler_output),
            "omnikit": run(lambda: ours.forward_patches(pixels, grid)),
        }, args.repeats)
        table.append((mode, f"{times['transformers']:.3f}", f"{times['omnikit']:.3f}",
                      f"{times['transformers'] / times['omnikit']:.2f}x"))
    print(f"{len(pixels)} patches ({grid.tolist()}), width {args.dim}, depth {args.depth}")
    print(format_table(("vision tower (fp32, 1 thread)", "transformers (CPU s)", "omnikit (CPU s)", "speed-up"), table))


if __name__ == "__main__":
    main()
