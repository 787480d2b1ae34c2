"""Eager speed and outputs of the cross-attention fusion and the ToMe ViT after their traced rewrite (no host
reads on the traced path), against an earlier revision, side by side in one process.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_xattn_tome_eager.py --old-rev 063a765``

The old revision's ``omnikit`` is imported as ``omnikit_old`` (:func:`bench_before_after.import_old`); both build
the same model (the new one loads the old one's weights) and run the same inputs in interleaved rounds. Each
workload first compares the two outputs (``max |new - old|``), then prints the median times and the median of
the per-round ratios ``old / new`` (> 1: faster now).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from bench_before_after import before_after_args, import_old, paired_rounds
from common import format_table

import omnikit


def xattn(ok: ModuleType, *, batch: int, train: bool, reference: torch.nn.Module | None = None,
          **overrides: object) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """``omni_xattn_tiny`` (gates opened) on ``batch`` rows of 48 tokens with a video and an audio item each."""
    torch.manual_seed(0)
    model = ok.create_model("omni_xattn_tiny", **overrides).train(train)
    if reference is not None:
        model.load_state_dict(reference.state_dict())
    else:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("attn_gate", "ff_gate")):
                    p.fill_(0.5)
    kwargs = model.contract_inputs([48] * batch, seed=1).kwargs
    if train:
        def step() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            out = model(**kwargs)
            out.square().mean().backward()
            return out.detach()
        return model, step
    return model, torch.no_grad()(lambda: model(**kwargs))


def xattn_stream(ok: ModuleType, reference: torch.nn.Module | None = None
                 ) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """``omni_xattn_tiny`` streamed over 48 tokens in chunks of 4, batch 4."""
    model, _ = xattn(ok, batch=4, train=False, reference=reference)
    kwargs = model.contract_inputs([48] * 4, seed=1).kwargs
    ids, media = kwargs.pop("input_ids"), {k: v for k, v in kwargs.items() if k != "lengths"}

    @torch.no_grad()
    def run() -> torch.Tensor:
        with model.streaming(4):
            return torch.cat([model(chunk, **media) for chunk in ids.split(4, dim=1)], dim=1)

    return model, run


def tome(ok: ModuleType, *, frames: int, r: int) -> Callable[[], torch.Tensor]:
    """``tome_forward_features`` on a random-weight timm ``vit_tiny_patch16_224`` (196 patches)."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    images = torch.randn(frames, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    forward = importlib.import_module(f"{ok.__name__}.vision").tome_forward_features
    return torch.no_grad()(lambda: forward(vit, images, r).tokens)


def merge(ok: ModuleType) -> Callable[[], torch.Tensor]:
    """``merge_tokens`` of ``(8, 196, 64)`` down to 24 tokens (three bipartite rounds)."""
    x = torch.randn(8, 196, 64, generator=torch.Generator().manual_seed(2))
    return lambda: ok.video.merge_tokens(x, 24).tokens


def main() -> None:
    args = before_after_args(__doc__.splitlines()[0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old_rev, Path(tmp))
        pairs: list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = []
        for label, kwargs in (("omni_xattn_tiny forward, batch 8", {"batch": 8, "train": False}),
                              ("omni_xattn_tiny fwd+bwd, batch 8", {"batch": 8, "train": True}),
                              ("omni_xattn_tiny forward, no resampler, batch 8",
                               {"batch": 8, "train": False, "num_latents": None})):
            reference, run_old = xattn(old, **kwargs)
            pairs.append((label, run_old, xattn(omnikit, reference=reference, **kwargs)[1]))
        reference, run_old = xattn_stream(old)
        pairs.append(("omni_xattn_tiny streamed, 12 chunks of 4, batch 4", run_old,
                      xattn_stream(omnikit, reference)[1]))
        pairs.append(("ToMe ViT-Ti/16, 8 frames, r=16", tome(old, frames=8, r=16), tome(omnikit, frames=8, r=16)))
        pairs.append(("merge_tokens 8 x 196 -> 24", merge(old), merge(omnikit)))
        for label, run_old, run_new in pairs:
            diff = float((run_new() - run_old()).abs().max())
            t_old, t_new, ratio = paired_rounds(run_old, run_new, args.repeats)
            rows.append([label, f"{diff:.1e}", f"{t_old * 1000:.2f}", f"{t_new * 1000:.2f}", f"{ratio:.2f}"])
    print(f"old: {args.old_rev}; new: this checkout; {args.threads} thread(s), {args.repeats} interleaved rounds\n")
    print(format_table(["workload", "max abs diff", "old (ms)", "new (ms)", "old / new (median of rounds)"], rows))


if __name__ == "__main__":
    main()
