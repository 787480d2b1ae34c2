"""Windowed audio encoders on a batch of short clips of mixed lengths: transformers, omnikit before, omnikit now.

Usage: ``python benchmarks/bench_audio_short.py --old-rev d2a7a3a [--repeats 9]``

The batch holds 137 / 1003 / 451 / 200 mel frames (towers of ``bench_audio_encoders.py``: width 512,
4 layers, 128 mels). The older revision is imported as ``omnikit_old`` (``bench_before_after.import_old``)
and built with the same weights. All three run in interleaved rounds; the table gives medians, the
omnikit / transformers ratios (< 1: omnikit faster; process CPU time unless ``--wall``)
and the largest difference of new vs old outputs.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from bench_audio_encoders import TOWER
from bench_before_after import import_old
from common import format_table, interleaved_samples
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as q25
from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as c3
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as q3

FRAMES = (137, 1003, 451, 200)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-rev", required=True)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--wall", action="store_true", help="wall time (default: process CPU time, one thread)")
    args = parser.parse_args()
    torch.manual_seed(0)
    lengths = torch.tensor(FRAMES)
    x = torch.randn(len(FRAMES), TOWER["num_mel_bins"], max(FRAMES))
    packed = torch.cat([x[b, :, :n] for b, n in enumerate(FRAMES)], dim=1)
    towers = {
        "Qwen2.5-Omni windowed encoder": (
            q25.Qwen2_5OmniAudioEncoder(transformers.Qwen2_5OmniAudioEncoderConfig(**TOWER, output_dim=1024)),
            lambda convert, hf: convert.from_transformers(hf)),
        "Qwen3-Omni AuT encoder": (
            q3.Qwen3OmniMoeAudioEncoder(c3.Qwen3OmniMoeAudioEncoderConfig(**TOWER, output_dim=1024,
                                                                          downsample_hidden_size=128)),
            lambda convert, hf: convert.from_transformers(hf)),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        old = import_old(args.old_rev, Path(tmp))
        import omnikit.convert

        for name, (hf, build) in towers.items():
            hf.eval()
            old_convert = importlib.import_module(f"{old.__name__}.convert")
            mine, theirs_old = build(omnikit.convert, hf).eval(), build(old_convert, hf).eval()
            diff = (mine(x, lengths).hidden_states - theirs_old(x, lengths).hidden_states).abs().max().item()
            t = interleaved_samples({"hf": lambda hf=hf: hf(packed, feature_lens=lengths),
                                     "old": lambda m=theirs_old: m(x, lengths),
                                     "new": lambda m=mine: m(x, lengths)}, repeats=args.repeats, warmup=1,
                                    clock=time.perf_counter if args.wall else time.process_time)
            med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
            rows.append((name, f"{med['hf']:.0f}", f"{med['old']:.0f}", f"{med['new']:.0f}",
                         f"{med['old'] / med['hf']:.2f}", f"{med['new'] / med['hf']:.2f}", f"{diff:.1e}"))
    print(f"frames {FRAMES}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} thread(s), {args.repeats} interleaved rounds, "
          f"{'wall' if args.wall else 'process CPU'} time\n")
    print(format_table(["encoder (fwd, fp32, CPU)", "transformers (ms)", "old (ms)", "new (ms)", "old / hf",
                        "new / hf", "max abs diff new vs old"], rows))


if __name__ == "__main__":
    main()
