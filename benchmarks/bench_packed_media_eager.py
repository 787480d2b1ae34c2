"""Eager speed and outputs of the packed-media paths (the omni Thinkers, their vision towers) before and after
they stopped reading tensor values on the host: an earlier revision against this checkout, in one process.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_packed_media_eager.py --old-rev 063a765``

The old revision's ``omnikit`` is imported as ``omnikit_old`` (``bench_before_after.import_old``); both build
the same model from the same seed and get the same processor-style batch (grids as the processor's
tensors). Outputs, and for the training steps every gradient, are checked to be bit-identical before
timing. The new checkout is also timed with the grids given as host ints (``omnikit.vision.host_grids``,
the form that compiles). Prints the median milliseconds (interleaved rounds) and ``new / old``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from bench_before_after import import_old
from common import format_table, interleaved_medians

import omnikit
from omnikit.fusion.omni_prompt import collate_prompts, contract_prompts
from omnikit.vision import host_grids, patchify_frames


def thinker_case(old: ModuleType, name: str, train: bool) -> tuple[Callable, Callable, Callable]:
    """``name`` on a batch of 3 items (images, audio clips, a video); forward, or forward + backward."""
    torch.manual_seed(0)
    before = old.create_model(name).train(train)
    after = omnikit.create_model(name).train(train)
    after.load_state_dict(before.state_dict())
    batch = collate_prompts(contract_prompts(after, [64, 48, 40], seed=1))
    hosted = host_grids(batch)

    def run(model: torch.nn.Module, kwargs: dict) -> Callable[[], list[torch.Tensor]]:
        def call() -> list[torch.Tensor]:
            with torch.set_grad_enabled(train):
                model.zero_grad(set_to_none=True)
                out = model(**kwargs)
                if not train:
                    return [out]
                out.square().mean().backward()
                return [out.detach()] + [p.grad for p in model.parameters() if p.grad is not None]
        return call

    return run(before, batch), run(after, batch), run(after, hosted)


def tower_case(old: ModuleType, name: str, side: int, frames: int) -> tuple[Callable, Callable, Callable]:
    """``name``'s ``forward_patches`` (no grad) on two images (one ``side`` square, one wider) and a video."""
    torch.manual_seed(0)
    before, after = old.create_model(name, depth=4).eval(), omnikit.create_model(name, depth=4).eval()
    after.load_state_dict(before.state_dict())
    c = after.config
    unit = c.patch[1] * c.merge_size
    g = torch.Generator().manual_seed(2)
    clips = [torch.randn(1, 1, 3, side, side, generator=g), torch.randn(1, 1, 3, side - 2 * unit, side + 3 * unit,
                                                                          generator=g),
             torch.randn(1, frames, 3, side // 2, side // 2, generator=g)]
    rows = [patchify_frames(clip, torch.tensor([clip.shape[1]]), tuple(c.patch), c.merge_size) for clip in clips]
    pixels, grid = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

    def run(model: torch.nn.Module, grids) -> Callable[[], list[torch.Tensor]]:
        def call() -> list[torch.Tensor]:
            with torch.no_grad():
                out = model.forward_patches(pixels, grids)
            return [out] if isinstance(out, torch.Tensor) else [out.hidden_states, *out.deepstack]
        return call

    return run(before, grid), run(after, grid), run(after, grid.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="063a765")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old_rev, Path(tmp))
        cases = [
            *((f"{name} {'fwd+bwd' if train else 'fwd'} (3 items)", lambda n=name, t=train: thinker_case(old, n, t))
              for name in ("qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny") for train in (False, True)),
            ("qwen2_5_omni_vision_tiny (depth 4) forward_patches, 3 items",
             lambda: tower_case(old, "qwen2_5_omni_vision_tiny", 128, 8)),
            ("qwen3_vit_tiny (depth 4) forward_patches, 3 items", lambda: tower_case(old, "qwen3_vit_tiny", 128, 8)),
        ]
        for label, make in cases:
            before, after, hosted = make()
            for got in (after(), hosted()):
                for a, b in zip(got, before(), strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
            times = interleaved_medians({"old": before, "new": after, "host": hosted}, repeats=args.repeats)
            rows.append([label, *(f"{times[k] * 1e3:.2f}" for k in ("old", "new", "host")),
                         f"{times['new'] / times['old']:.2f}", f"{times['host'] / times['old']:.2f}"])
    print(f"torch {torch.__version__}, 1 thread, old = {args.old_rev}, {args.repeats} interleaved rounds; "
          "outputs and gradients bit-identical\n")
    print(format_table(["workload", "old (ms)", "new, tensor grids (ms)", "new, host grids (ms)", "new / old",
                        "host / old"], rows))


if __name__ == "__main__":
    main()
