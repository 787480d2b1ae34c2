"""Two versions of omnikit side by side in one process: is a change slower on the hot paths?

Usage::

    git archive <base-commit> omnikit | tar -x -C /tmp/ab && mv /tmp/ab/omnikit /tmp/ab/omnikit_base
    find /tmp/ab/omnikit_base -name '*.py' -exec sed -i -E \\
        's/\\bomnikit\\./omnikit_base./g; s/^import omnikit$/import omnikit_base as omnikit/; \\
         s/from omnikit import/from omnikit_base import/g' {} +
    PYTHONPATH=/tmp/ab python benchmarks/bench_ab.py [--repeats 9]

The base copy is renamed ``omnikit_base`` so both import at once. Each row builds the same model
from both versions with the same weights and inputs and times them interleaved (median of
``--repeats``): the Thinker train step of ``bench_thinker.py`` (dim 128, 2 layers, 2 x 128
tokens), the audio encoders of ``bench_audio_encoders.py`` cut to 2 layers (4 clips of
30/12.34/4.56/21.7 s, 128 mel bins, width 512), and Thinker greedy decoding (32 tokens).
Ratio = base time / branch time (> 1: the branch is faster).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from types import ModuleType

import torch
from common import format_table, interleaved_medians

CLIP_SECONDS = (30.0, 12.34, 4.56, 21.7)
TOWER = dict(dim=512, depth=2, num_heads=8, mlp_hidden=2048, n_mels=128)


def _pair(build: Callable[[ModuleType], torch.nn.Module], base: ModuleType, branch: ModuleType):
    torch.manual_seed(0)
    a = build(base)
    b = build(branch)
    b.load_state_dict(a.state_dict())
    return a, b


def thinker_train(base: ModuleType, branch: ModuleType, repeats: int) -> list[str]:
    def build(lib: ModuleType) -> torch.nn.Module:
        fusion, layers = importlib.import_module(f"{lib.__name__}.fusion"), importlib.import_module(
            f"{lib.__name__}.layers")
        return fusion.Thinker(layers.DecoderConfig(
            dim=128, depth=2, num_heads=8, num_kv_heads=2, mlp_hidden=768, vocab_size=4096, qkv_bias=True,
            qk_norm=False, norm_eps=1e-6, rope_base=1_000_000.0, mrope_sections=(2, 3, 3),
        )).train()

    models = _pair(build, base, branch)
    ids = torch.randint(0, 4096, (2, 128))
    positions = torch.arange(128).expand(3, 2, -1)
    steps = {}
    for label, model in zip(("base", "branch"), models):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            logits = model(ids, positions=positions)
            torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps[label] = step
    return _row("Thinker train step (dim 128, 2 layers, 2 x 128)", interleaved_medians(steps, repeats=repeats))


def thinker_decode(base: ModuleType, branch: ModuleType, repeats: int) -> list[str]:
    models = _pair(lambda lib: lib.create_model("thinker_tiny").eval(), base, branch)
    low = max(models[0].media_tokens.as_dict().values()) + 1
    ids = torch.randint(low, models[0].config.vocab_size, (2, 16))
    fns = {label: (lambda m=m: m.generate(ids, max_new_tokens=32)) for label, m in zip(("base", "branch"), models)}
    with torch.inference_mode():
        times = interleaved_medians(fns, repeats=repeats)
    return _row("thinker_tiny greedy decode, 2 x 32 tokens", times)


def audio(base: ModuleType, branch: ModuleType, repeats: int) -> list[list[str]]:
    lengths = torch.tensor([int(s * 100) for s in CLIP_SECONDS])
    rows = []
    for name, extra in (("whisper_base_encoder", {}), ("qwen2_5_omni_audio", {"output_dim": 512}),
                        ("qwen3_omni_aut", {"output_dim": 512})):
        models = _pair(lambda lib, name=name, extra=extra: lib.create_model(name, **TOWER, **extra).eval(),
                       base, branch)
        frames = 3000 if name.startswith("whisper") else int(lengths.max())
        x = torch.randn(len(lengths), TOWER["n_mels"], frames)
        fns = {label: (lambda m=m, x=x: m(x, lengths)) for label, m in zip(("base", "branch"), models)}
        with torch.inference_mode():
            rows.append(_row(f"{name} (2 layers) fwd, 4 clips", interleaved_medians(fns, repeats=repeats)))
    return rows


def _row(label: str, times: dict[str, float]) -> list[str]:
    base, branch = times["base"], times["branch"]
    return [label, f"{base * 1e3:.1f}", f"{branch * 1e3:.1f}", f"{base / branch:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--skip-audio", action="store_true", help="only the Thinker rows")
    args = parser.parse_args()
    base, branch = importlib.import_module("omnikit_base"), importlib.import_module("omnikit")
    rows = [thinker_train(base, branch, args.repeats), thinker_decode(base, branch, args.repeats)]
    if not args.skip_audio:
        rows += audio(base, branch, args.repeats)
    print(format_table(["fp32, CPU, 1 thread", "base (ms)", "branch (ms)", "base / branch"], rows))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
