"""Sampling N frames from a long video vs decoding everything, and vs decord's own ``get_batch``.

    python benchmarks/bench_video_decode.py [--seconds 60] [--frames 16] [--repeats 5]

Writes a synthetic 320x180 H.264 video (keyframe every 2 s) unless ``--video`` is given, then times,
side by side in one process (median of ``--repeats``):

- ``load_video(num_frames=N)`` with the PyAV backend (keyframe seeks) and the decord backend;
- decord's own ``VideoReader.get_batch`` on the same indices (the reference);
- a full decode of every frame with PyAV and with decord.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import format_table, interleaved_medians

from omnikit.video import load_video, open_video, uniform_indices
from omnikit.video.backends.pyav import PyAVBackend
from omnikit.video.synthetic import write_synthetic_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=str, default=None)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import decord

    path = args.video
    if path is None:
        path = str(Path(tempfile.gettempdir()) / f"omnikit_bench_{args.seconds}s.mp4")
        if not Path(path).exists():
            fps = 30
            write_synthetic_video(path, num_frames=args.seconds * fps, fps=fps, size=(180, 320), gop=2 * fps,
                                  cuts=list(range(90, args.seconds * fps, 150)), sample_rate=0)
    with open_video(path) as video:
        info = video.info
    indices = uniform_indices(info.num_frames, args.frames)

    decoded = []
    original = PyAVBackend._decoded

    def counting(self, decoder):
        for item in original(self, decoder):
            decoded.append(item[0])
            yield item

    PyAVBackend._decoded = counting
    load_video(path, num_frames=args.frames, backend="pyav")
    PyAVBackend._decoded = original

    def decord_get_batch() -> None:
        decord.VideoReader(path, ctx=decord.cpu(0)).get_batch(indices.tolist()).asnumpy()

    def pyav_full() -> None:
        with open_video(path, backend="pyav") as v:
            for _ in v.iter_frames():
                pass

    def decord_full() -> None:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        for start in range(0, len(reader), 64):
            reader.get_batch(list(range(start, min(start + 64, len(reader))))).asnumpy()

    rows = {
        "omnikit load_video, pyav backend": lambda: load_video(path, num_frames=args.frames, backend="pyav"),
        "omnikit load_video, decord backend": lambda: load_video(path, num_frames=args.frames, backend="decord"),
        "decord VideoReader.get_batch (reference)": decord_get_batch,
        "full decode, pyav (every frame)": pyav_full,
        "full decode, decord (every frame)": decord_full,
    }
    results = interleaved_medians(rows, repeats=args.repeats, warmup=1)
    full = results["full decode, pyav (every frame)"]
    ref = results["decord VideoReader.get_batch (reference)"]
    print(f"video: {info.num_frames} frames, {info.width}x{info.height}, {info.fps:.0f} fps, "
          f"{len(info.keyframes)} keyframes; sampling {args.frames} frames; pyav decoded {len(decoded)} frames")
    print()
    print(format_table(["method", "time / full pyav decode", "time / decord get_batch"],
                       [[name, f"{t / full:.3f}", f"{t / ref:.2f}"] for name, t in results.items()]))


if __name__ == "__main__":
    main()
