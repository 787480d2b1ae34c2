"""ToMe inside a timm ViT (``tome_forward_features``): frames per second and tokens out, per ``r``.

    python benchmarks/bench_tome_vit.py [--model vit_small_patch16_224] [--frames 16] [--r 0 8 13 16]

Random weights (no download): the speed of merging does not depend on them. ``timm`` is the
ViT's own ``forward_features``; ``r = 0`` runs omnikit's block loop without merging, so its ratio
to timm is the loop's overhead. Times are medians of interleaved repeats in one process
(forward, no grad, ``torch.set_num_threads(--threads)``).
"""

from __future__ import annotations

import argparse

import torch
from common import format_table, interleaved_medians

from omnikit.utils.deps import require
from omnikit.vision import tome_forward_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--r", type=int, nargs="+", default=[0, 8, 13, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vit = require("timm").create_model(args.model, pretrained=False, num_classes=0).eval()
    size = vit.patch_embed.img_size
    frames = torch.randn(args.frames, 3, *size)
    fns = {"timm": lambda: vit.forward_features(frames)}
    fns |= {f"r={r}": (lambda r=r: tome_forward_features(vit, frames, r)) for r in args.r}
    with torch.no_grad():
        times = interleaved_medians(fns, repeats=args.repeats, warmup=1)
        tokens = {f"r={r}": tome_forward_features(vit, frames[:1], r).tokens.shape[1] for r in args.r}
    tokens["timm"] = vit.forward_features(frames[:1]).shape[1]
    rows = [
        [name, tokens[name], f"{args.frames / t:.1f}", f"{times['timm'] / t:.2f}"] for name, t in times.items()
    ]
    print(f"{args.model}, {args.frames} frames of {size[0]}x{size[1]}, {len(vit.blocks)} blocks, "
          f"{args.threads} threads, torch {torch.__version__}\n")
    print(format_table(["forward_features", "tokens out per frame", "frames/s", "speed-up vs timm"], rows))


if __name__ == "__main__":
    main()
