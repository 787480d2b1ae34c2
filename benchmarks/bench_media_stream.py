"""Peak memory and time vs media duration: audio (1 minute to 10 hours) and video (10 s to 400 s at 1 fps).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_media_stream.py --plot docs/img/long_context_media.png``.

Each measurement runs in a fresh process and reports the growth of its peak resident memory while
encoding: the peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` once the model is built,
and the growth is measured from the resident memory at that moment (the one pass's decoded media
are counted: it holds them, the stream does not). Tiny-but-real towers (real input layouts, small widths):

- audio: the Qwen2.5-Omni windowed tower (``qwen2_5_omni_audio``: 128 mels, 2 s windows, 25
  tokens/s) at dim 64, 2 layers, 2 heads, MLP 256, output 128, on 16 kHz noise. ``stream`` is
  :func:`omnikit.audio.stream_encode` (exact streamed log-mel, read twice, 60 s windows) from a
  generator of 10 s chunks (``generator``) or from a 16-bit WAV file on disk (``file``); ``one
  pass`` is the log-mel of the whole waveform and one forward. Output tokens are counted and
  dropped (a caller writes them out), so the stream's growth is what it holds, not the tokens.
- video: the Qwen2.5-Omni vision tower (``qwen2_5_omni_vision``: (2, 14, 14) patches, 2x2 merge,
  112 px windows, full attention at block 1) at dim 64, 2 blocks, 2 heads, on a synthetic H.264
  video at 112x112, 2 fps, sampled at 1 fps. ``stream`` is :func:`omnikit.video.stream_encode_video`
  (32-frame windows); ``one pass`` is ``load_video`` of every sampled frame and one forward.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from common import format_table, plot_memory_time, pyplot

import omnikit
from omnikit.audio import LogMelSpectrogram, stream_encode
from omnikit.video import load_video, stream_encode_video
from omnikit.video.synthetic import write_synthetic_video

AUDIO = dict(dim=64, depth=2, num_heads=2, mlp_hidden=256, output_dim=128)
VISION = dict(dim=64, depth=2, num_heads=2, mlp_hidden=128, out_dim=128, full_attention_blocks=(1,))
RATE, SIDE, VIDEO_FPS = 16000, 112, 2
AUDIO_POINTS = {"generator": [60, 600, 3600, 3 * 3600, 10 * 3600], "file": [60, 600, 3600], "one pass": [60, 300, 600]}
VIDEO_POINTS = [10, 50, 100, 200, 400]


def _status(field: str) -> float:
    """``/proc/self/status`` ``field`` in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def reset_peak() -> float:
    """Reset the peak resident memory to the current one (Linux); returns it in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS:")


def peak_mib() -> float:
    return _status("VmHWM:")


def noise(seconds: int, piece: int = 10):
    """A function returning 10 s chunks of the same noise each time it is called."""
    def chunks():
        g = torch.Generator().manual_seed(0)
        for start in range(0, seconds, piece):
            yield 0.1 * torch.randn(RATE * min(piece, seconds - start), generator=g)
    return chunks


def write_wav(path: Path, seconds: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(RATE)
        for chunk in noise(seconds, 60)():
            f.writeframes((chunk.numpy() * 32767).astype(np.int16).tobytes())


def audio_child(seconds: int, how: str, path: str) -> dict:
    torch.manual_seed(0)
    model = omnikit.create_model("qwen2_5_omni_audio", **AUDIO).eval()
    wav = torch.cat(list(noise(seconds)())) if how == "one pass" else None
    base, start = reset_peak(), time.perf_counter()
    with torch.inference_mode():
        if how == "one pass":
            mel, _ = LogMelSpectrogram(128)(wav[None, None])
            tokens = int(model(mel).lengths[0])
        else:
            source = noise(seconds) if how == "generator" else path
            tokens = sum(len(piece) for piece in stream_encode(model, source, chunk_seconds=60.0))
    return {"delta": peak_mib() - base, "seconds": time.perf_counter() - start, "tokens": tokens}


def video_child(seconds: int, how: str, path: str) -> dict:
    torch.manual_seed(0)
    model = omnikit.create_model("qwen2_5_omni_vision", **VISION).eval()
    base, start = reset_peak(), time.perf_counter()
    with torch.inference_mode():
        if how == "one pass":
            clip = load_video(path, fps=1.0, strategy="fps", size=(SIDE, SIDE))
            tokens = int(model(clip.frames.float()[None] / 255).lengths[0])
        else:
            tokens = sum(len(p) for p in stream_encode_video(model, path, fps=1.0, size=(SIDE, SIDE), window_frames=32))
    return {"delta": peak_mib() - base, "seconds": time.perf_counter() - start, "tokens": tokens}


def run_child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def label(seconds: int) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=4, metavar=("MEDIA", "SECONDS", "HOW", "PATH"))
    parser.add_argument("--plot", help="save memory and time vs duration as this PNG")
    parser.add_argument("--max-audio-seconds", type=int, default=10 * 3600)
    args = parser.parse_args()
    if args.child:
        media, seconds, how, path = args.child
        print(json.dumps((audio_child if media == "audio" else video_child)(int(seconds), how, path)))
        return
    curves: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for how, points in AUDIO_POINTS.items():
            for seconds in (s for s in points if s <= args.max_audio_seconds):
                path = Path(tmp) / f"{seconds}.wav"
                if how == "file":
                    write_wav(path, seconds)
                r = run_child("audio", str(seconds), how, str(path))
                path.unlink(missing_ok=True)
                curves.setdefault(("audio", how), []).append((seconds, r["delta"], r["seconds"]))
                rows.append(("audio", label(seconds), how, r["tokens"], f"{r['delta']:.0f}", f"{r['seconds']:.1f}"))
                print(rows[-1], flush=True)
        for seconds in VIDEO_POINTS:
            path = Path(tmp) / f"{seconds}.mp4"
            write_synthetic_video(path, num_frames=seconds * VIDEO_FPS, fps=VIDEO_FPS, size=(SIDE, SIDE), gop=24)
            for how in ("stream", "one pass"):
                r = run_child("video", str(seconds), how, str(path))
                curves.setdefault(("video", how), []).append((seconds, r["delta"], r["seconds"]))
                rows.append(("video", f"{seconds} s", how, r["tokens"], f"{r['delta']:.0f}", f"{r['seconds']:.1f}"))
                print(rows[-1], flush=True)
    print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}; audio {AUDIO}, vision {VISION}\n")
    print(format_table(["media", "duration", "how", "tokens", "peak memory growth (MiB)", "time (s)"], rows))
    if args.plot:
        plot(curves, args.plot)


def plot(curves: dict[tuple[str, str], list[tuple[int, float, float]]], path: str) -> None:
    fig, axes = pyplot().subplots(2, 2, figsize=(9, 6.5))
    for (media, how), points in curves.items():
        seconds, memory, times = zip(*points)
        x = [s / 3600 for s in seconds] if media == "audio" else list(seconds)
        plot_memory_time(axes[0 if media == "audio" else 1], x, memory, times, "--" if how == "one pass" else "-", how)
    for row, (media, unit) in enumerate((("audio", "hours"), ("video at 1 fps", "seconds"))):
        for col, title in enumerate(("peak memory growth (MiB)", "time (s)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log" if col else "linear")
            ax.set_xlabel(f"{media} duration ({unit})")
            ax.set_title(f"{media}: {title}", fontsize=9)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
