"""Peak memory of the windowed (Qwen2.5-Omni-style) encoder on long audio: chunked vs one forward.

Run: ``python benchmarks/bench_audio_long.py``. Each measurement runs in a fresh process and
reports the growth of its peak resident memory during encoding (the mel features, the model and
the Python runtime are allocated before the baseline is taken). ``iter_encode`` streams its
outputs out chunk by chunk (here: discarded), so its peak should not depend on the audio length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from common import format_table

import omnikit
from omnikit.audio import iter_encode

TOWER = dict(dim=256, depth=2, num_heads=4, mlp_hidden=1024, output_dim=512)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(minutes: float, mode: str) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("qwen2_5_omni_audio", **TOWER).eval()
    features = torch.randn(1, 128, int(minutes * 60 * 100))
    base = peak_mib()
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "full":
            tokens = int(model(features).lengths[0])
        else:
            tokens = sum(int(out.lengths[0]) for out in iter_encode(model, features, chunk_frames=6000,
                                                                    progress=False))
    print(json.dumps({"delta": peak_mib() - base, "seconds": time.perf_counter() - start, "tokens": tokens}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("MINUTES", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(float(args.child[0]), args.child[1])
        return
    rows = []
    for minutes, modes in ((5, ("chunked", "full")), (20, ("chunked", "full")), (60, ("chunked",))):
        for mode in modes:
            result = subprocess.run([sys.executable, __file__, "--child", str(minutes), mode], check=True,
                                    capture_output=True, text=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            label = "iter_encode, 60 s chunks" if mode == "chunked" else "one forward"
            rows.append((f"{minutes} min", label, r["tokens"], f"{r['delta']:.0f}", f"{r['seconds']:.1f}"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, qwen2_5_omni_audio with {TOWER}\n")
    print(format_table(["audio", "how", "tokens", "peak memory growth (MiB)", "time (s)"], rows))


if __name__ == "__main__":
    main()
