"""Eager speed of the modules that gained a traced path (compile issue, second pass): an earlier revision's
module files against this checkout's, in one process, same weights and inputs, timed round-robin.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_traced_paths_eager.py --old-rev a662f14``

Each old file is taken with ``git show REV:path`` and imported on its own (its imports resolve to this
checkout's ``omnikit``, whose other modules did not change; the old AuT gets the old
``audio/windows.py``); every pair is checked to give equal outputs before it is timed. Prints the median
milliseconds per call and ``new / old`` (< 1: faster now).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from common import format_table, interleaved_medians

import omnikit
from omnikit import registry
from omnikit.audio import aut, quantize, windows
from omnikit.layers import linear_attention
from omnikit.vision import window_vit

REPO = Path(__file__).resolve().parents[1]


def old_module(rev: str, path: str, folder: Path) -> ModuleType:
    """``path`` at ``rev``, imported as a module of its own."""
    name = "old_" + Path(path).stem
    file = folder / f"{name}.py"
    file.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                                   capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    registered = dict(registry._REGISTRY)  # the old file registers the same model names: not kept
    registry._REGISTRY.clear()
    try:
        spec.loader.exec_module(module)
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(registered)
    return module


def pair(old: Callable[[], torch.Tensor], new: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float]:
    torch.testing.assert_close(new(), old(), rtol=0, atol=0)
    times = interleaved_medians({"old": old, "new": new}, repeats=repeats)
    return times["old"] * 1e3, times["new"] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-rev", default="a662f14")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    old = {m.__name__: old_module(args.old_rev, f"omnikit/{m.__name__.split('.', 1)[1].replace('.', '/')}.py", folder)
           for m in (linear_attention, quantize, aut, window_vit, windows)}
    old_la, old_q, old_aut, old_wv, old_windows = old.values()
    old_aut.Windows = old_windows.Windows  # the old AuT with the old window packing
    g = torch.Generator().manual_seed(0)
    rows = []

    b, h, t, d = 2, 4, 512, 64
    q, k = (F.normalize(torch.randn(b, h, t, d, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(b, h, t, d, generator=g)
    decay, beta = -torch.rand(b, h, t, generator=g), torch.rand(b, h, t, generator=g)
    for chunk in (64, 16):
        times = pair(lambda c=chunk: old_la.gated_delta_rule_chunked(q, k, v, decay, beta, None, c)[0],
                     lambda c=chunk: linear_attention.gated_delta_rule_chunked(q, k, v, decay, beta, None, c)[0],
                     args.repeats)
        rows.append((f"gated delta rule, chunked (2 x 4 heads x 512, chunk {chunk})", *times))

    x = torch.randn(4, 200, 128, generator=g)
    mask = torch.arange(200)[None] < torch.tensor([[200], [150], [120], [90]])
    torch.manual_seed(0)
    rvq_old = old_q.ResidualVQ(128, 8, 1024, kmeans_init=False, dead_threshold=0).train()
    rvq_new = quantize.ResidualVQ(128, 8, 1024, kmeans_init=False, dead_threshold=0).train()
    rvq_new.load_state_dict(rvq_old.state_dict())
    rows.append(("ResidualVQ training step (8 x 1024 codes, 4 x 200 x 128, masked)",
                 *pair(lambda: rvq_old(x, mask).quantized, lambda: rvq_new(x, mask).quantized, args.repeats)))

    config = dataclasses.replace(omnikit.create_model("qwen3_omni_aut_tiny").config, n_mels=32, dim=64,
                                 mlp_hidden=128, n_window=50, attn_window_chunks=4)
    torch.manual_seed(0)
    aut_old, aut_new = old_aut.AuTEncoder(config).eval(), aut.AuTEncoder(config).eval()
    aut_new.load_state_dict(aut_old.state_dict())
    feats, lens = torch.randn(4, 32, 1000, generator=g), torch.tensor([1000, 800, 613, 250])
    config = dataclasses.replace(omnikit.create_model("qwen2_5_omni_vision_tiny").config, dim=64, mlp_hidden=128,
                                 num_heads=4)
    torch.manual_seed(0)
    vit_old, vit_new = old_wv.WindowViT(config).eval(), window_vit.WindowViT(config).eval()
    vit_new.load_state_dict(vit_old.state_dict())
    frames, frame_lens = torch.randn(2, 8, 3, 48, 64, generator=g), torch.tensor([8, 5])
    with torch.no_grad():
        rows.append(("AuT encoder forward (width 64, 4 x 1000 frames)",
                     *pair(lambda: aut_old(feats, lens).hidden_states, lambda: aut_new(feats, lens).hidden_states,
                           args.repeats)))
        rows.append(("WindowViT frames forward (width 64, 2 x 8 frames of 48 x 64)",
                     *pair(lambda: vit_old(frames, frame_lens).hidden_states,
                           lambda: vit_new(frames, frame_lens).hidden_states, args.repeats)))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, old = {args.old_rev}\n")
    print(format_table(["eager path", "old (ms)", "new (ms)", "new / old"],
                       [(name, f"{o:.2f}", f"{n:.2f}", f"{n / o:.2f}") for name, o, n in rows]))


if __name__ == "__main__":
    main()
