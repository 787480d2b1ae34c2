"""The same workloads on omnikit at an earlier git revision and on this checkout, side by side in one process.

Usage: python benchmarks/bench_before_after.py --old-rev a950b1c [--repeats 11]

The old revision's ``omnikit/`` is exported with ``git archive`` into a temporary folder and
imported as ``omnikit_old`` (its own imports rewritten), so both versions build the same model from
the same seed and run in interleaved rounds whose order alternates (old first, then new first).
Workloads: a Thinker train step (fwd + bwd + AdamW,
dim 256, 4 layers, 4 x 128 tokens), streamed speech of ``thinker_talker_tiny`` (24 text tokens,
50 code frames, chunks of 5 frames), ``omni_early_tiny`` forward + backward with video and audio,
the forward of the published Thinkers' tiny presets, ``duplex_tiny``'s live loop over 24 frames, and a
MoE layer forward + backward (512 tokens, dim 256, 16 experts x 128, top-4). The table gives the median
time of each and the median of the per-round ratios ``old / new`` (> 1: faster now), which a machine whose
load drifts disturbs least.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from common import format_table

import omnikit


def import_old(rev: str, into: Path) -> ModuleType:
    """``omnikit`` at ``rev`` as the package ``omnikit_old``."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "omnikit"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    package = into / "omnikit_old"
    (into / "omnikit").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\bomnikit\b", "omnikit_old", path.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module("omnikit_old")


def thinker_step(ok: ModuleType) -> Callable[[], None]:
    torch.manual_seed(0)
    config = importlib.import_module(f"{ok.__name__}.layers").DecoderConfig(
        dim=256, depth=4, num_heads=8, num_kv_heads=2, mlp_hidden=768, vocab_size=4096, qkv_bias=True,
        qk_norm=False, rope_base=1_000_000.0, mrope_sections=(4, 6, 6))
    model = importlib.import_module(f"{ok.__name__}.fusion").Thinker(config).train()
    ids = torch.randint(0, 4096, (4, 128), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(128).expand(3, 4, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        logits = model(ids, positions=positions)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def speech_stream(ok: ModuleType) -> Callable[[], None]:
    torch.manual_seed(0)
    model = ok.create_model("thinker_talker_tiny").eval()
    tokens = importlib.import_module(f"{ok.__name__}.fusion.models").TINY_TOKENS
    g = torch.Generator().manual_seed(0)
    media = {"frames": torch.rand(1, 4, 3, 16, 16, generator=g), "audio_features": torch.randn(1, 16, 64, generator=g),
             "audio_lengths": torch.tensor([64])}
    ids = torch.tensor([[4] + [tokens.video] * 32 + [5, 6] + [tokens.audio] * 16 + [7, 40, 41, 42, 43, 44, 45]])
    return lambda: list(model.stream(ids, max_new_tokens=24, max_frames=50, chunk_frames=5, **media))


def omni_step(ok: ModuleType) -> Callable[[], None]:
    """``omni_early_tiny`` forward + backward on a batch of 2 with video and audio (adapters, TMRoPE, Thinker)."""
    torch.manual_seed(0)
    model = ok.create_model("omni_early_tiny").train()
    kwargs = model.contract_inputs([96, 80], seed=1).kwargs

    def step() -> None:
        model(**kwargs).sum().backward()

    return step


def published_thinker(name: str) -> Callable[[ModuleType], Callable[[], None]]:
    """A published Thinker's tiny preset (``OmniThinker`` / ``Qwen3OmniThinker``): one forward on its contract batch
    (processor keywords: audio, images, a video), no gradient."""

    def make(ok: ModuleType) -> Callable[[], None]:
        torch.manual_seed(0)
        model = ok.create_model(name).eval()
        kwargs = model.contract_inputs([48, 40], seed=1).kwargs
        return torch.no_grad()(lambda: model(**kwargs))

    return make


def duplex_stream(ok: ModuleType) -> Callable[[], None]:
    """``duplex_tiny``'s live loop over 24 user frames (temporal step + depth transformer per frame)."""
    torch.manual_seed(0)
    model = ok.create_model("duplex_tiny").eval()
    frames = torch.randint(0, 64, (1, 4, 24), generator=torch.Generator().manual_seed(2)).unbind(-1)
    return lambda: list(model.stream(iter(frames)))


def moe_step(ok: ModuleType) -> Callable[[], None]:
    torch.manual_seed(0)
    moe_pkg = importlib.import_module(f"{ok.__name__}.moe")
    moe = moe_pkg.MoE(moe_pkg.MoEConfig(dim=256, num_experts=16, top_k=4, expert_hidden=128))
    x = torch.randn(512, 256, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def step() -> None:
        moe(x).sum().backward()

    return step


def paired_rounds(old: Callable[[], object], new: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median seconds of ``old`` and ``new`` and the median per-round ratio, the order alternating per round."""
    for fn in (old, new, old, new):  # warm-up
        fn()
    olds, news = [], []
    for round_ in range(repeats):
        pair = [(olds, old), (news, new)]
        for samples, fn in pair if round_ % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    ratio = statistics.median(o / n for o, n in zip(olds, news))
    return statistics.median(olds), statistics.median(news), ratio


def before_after_args(description: str) -> argparse.Namespace:
    """``--old-rev``, ``--repeats`` and ``--threads`` from the command line (the thread count applied)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--old-rev", required=True, help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


Workload = tuple[str, Callable[[ModuleType], Callable[[], object]]]


def compare(description: str, workloads: list[Workload], digits: int = 1) -> None:
    """Parse the command line, run each ``(label, make)`` workload built by the old revision and by this
    checkout in interleaved rounds, and print the table of median times and ratios."""
    args = before_after_args(description)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old_rev, Path(tmp))
        for label, make in workloads:
            t_old, t_new, ratio = paired_rounds(make(old), make(omnikit), args.repeats)
            rows.append([label, f"{t_old * 1000:.{digits}f}", f"{t_new * 1000:.{digits}f}", f"{ratio:.2f}"])
    print(f"old: {args.old_rev}; new: this checkout; {args.threads} thread(s), {args.repeats} interleaved rounds\n")
    print(format_table(["workload", "old (ms)", "new (ms)", "old / new (median of rounds)"], rows))


def main() -> None:
    compare(__doc__.splitlines()[0], [("Thinker train step (fwd+bwd+AdamW)", thinker_step),
                                      ("streamed speech, thinker_talker_tiny", speech_stream),
                                      ("omni_early_tiny fwd+bwd (video + audio)", omni_step),
                                      ("qwen2_5_omni_thinker_tiny forward",
                                       published_thinker("qwen2_5_omni_thinker_tiny")),
                                      ("qwen3_omni_thinker_tiny forward", published_thinker("qwen3_omni_thinker_tiny")),
                                      ("duplex_tiny live loop, 24 frames", duplex_stream),
                                      ("MoE layer fwd+bwd", moe_step)])


if __name__ == "__main__":
    main()
