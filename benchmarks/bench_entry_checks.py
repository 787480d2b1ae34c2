"""What the eager-mode input checks cost next to the forward they guard (CPU, float32).

Usage: python benchmarks/bench_entry_checks.py [--repeats 7]

For each audio encoder preset cut to the tower of ``bench_audio_encoders.py`` (4 clips of
30/12.34/4.56/21.7 s, 128 mel bins, width 512, 4 layers) and a Thinker prefill (dim 256,
4 layers, 4 x 256 tokens), times the entry checks alone (``check_features``: shapes, lengths,
finite valid frames; ``Thinker``: id range) and the whole forward, interleaved in one process,
and prints the checks' share.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from common import format_table, interleaved_medians

import omnikit
from omnikit.audio.blocks import check_features

CLIP_SECONDS = (30.0, 12.34, 4.56, 21.7)
TOWER = dict(dim=512, depth=4, num_heads=8, mlp_hidden=2048, n_mels=128)
ENCODERS = {  # the real presets, cut to the benchmark tower
    "whisper_base_encoder": dict(TOWER),
    "qwen2_5_omni_audio": dict(TOWER, output_dim=512),
    "qwen3_omni_aut": dict(TOWER, output_dim=512),
}


def audio_rows(repeats: int) -> list[list[str]]:
    lengths = torch.tensor([int(s * 100) for s in CLIP_SECONDS])
    rows = []
    for name, overrides in ENCODERS.items():
        model = omnikit.create_model(name, **overrides).eval()
        frames = 3000 if name.startswith("whisper") else int(lengths.max())
        x = torch.randn(len(lengths), TOWER["n_mels"], frames)
        n = lengths.clamp(max=frames)
        times = interleaved_medians(
            {"checks": partial(check_features, x, n, TOWER["n_mels"]), "forward": partial(model, x, n)},
            repeats=repeats,
        )
        checks, forward = times["checks"], times["forward"]
        rows.append([name, f"{checks * 1e3:.2f}", f"{forward * 1e3:.0f}", f"{100 * checks / forward:.3f}%"])
    return rows


def thinker_row(repeats: int) -> list[str]:
    model = omnikit.create_model("thinker_tiny", dim=256, depth=4, num_heads=8, num_kv_heads=2, mlp_hidden=768,
                                 vocab_size=4096, mrope_sections=(4, 6, 6)).eval()
    low = max(model.media_tokens.as_dict().values()) + 1
    ids = torch.randint(low, 4096, (4, 256))
    times = interleaved_medians({"checks": partial(model.check_ids, ids), "forward": partial(model, ids)},
                                repeats=repeats)
    checks, forward = times["checks"], times["forward"]
    return ["thinker_tiny (dim 256, 4 layers), 4 x 256 ids", f"{checks * 1e3:.2f}", f"{forward * 1e3:.0f}",
            f"{100 * checks / forward:.3f}%"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    with torch.inference_mode():
        rows = [*audio_rows(args.repeats), thinker_row(args.repeats)]
    print(format_table(["model (fwd, fp32, CPU)", "entry checks (ms)", "forward (ms)", "checks / forward"], rows))


if __name__ == "__main__":
    main()
