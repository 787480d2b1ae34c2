"""From a video file to a token budget: sample, look, encode, compress.

    python examples/video_pipeline.py [VIDEO] [--out video_example] [--budget 64]

Without VIDEO a synthetic clip with three hard cuts, motion and an audio track is written first.
The script samples the video twice (uniform and shot-aware), plots the cut-score curve with the
chosen frames, saves a contact sheet of each sample, encodes the shot-aware frames with a timm
ViT (random weights: no download), and merges the tokens down to ``--budget``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from omnikit.video import (
    compute_frame_scores,
    find_cuts,
    load_video,
    merge_tokens,
    open_video,
    plot_contact_sheet,
    plot_sampling,
)
from omnikit.video.synthetic import write_synthetic_video
from omnikit.vision import FrameEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=None)
    parser.add_argument("--out", default="video_example")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--budget", type=int, default=64, help="tokens left after merging")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    path = args.video
    if path is None:
        truth = write_synthetic_video(out / "synthetic.mp4", num_frames=192, fps=24, size=(96, 128),
                                      cuts=[40, 95, 150], audio_bursts=[3.0])
        path = truth.path
        print(f"wrote {path}: cuts at frames {truth.cuts}")

    with open_video(path) as video:
        info = video.info
        scores = compute_frame_scores(video, progress=True)
    cuts = find_cuts(scores.cut)
    print(f"{info.num_frames} frames at {info.fps:.2f} fps, {info.width}x{info.height}; detected cuts: {cuts}")

    clips = {
        strategy: load_video(path, num_frames=args.frames, strategy=strategy, size=112)
        for strategy in ("uniform", "scene")
    }
    for strategy, clip in clips.items():
        print(f"{strategy:8s} frames {clip.indices.tolist()}")
        print(f"{'':8s} times  {[round(t, 2) for t in clip.timestamps.tolist()]}")
        plot_contact_sheet(clip, out / f"contact_sheet_{strategy}.png", columns=6, title=f"strategy={strategy!r}")
        plot_sampling(scores.cut, clip.indices.tolist(), out / f"scores_{strategy}.png", cuts=cuts, fps=info.fps,
                      title=f"cut score and frames chosen by strategy={strategy!r}")

    encoder = FrameEncoder("vit_tiny_patch16_224", img_size=112, pretrained=False).eval()
    frames = encoder.preprocess(clips["scene"].frames, size=(112, 112))[None]  # (1, T, 3, 112, 112)
    with torch.no_grad():
        tokens = encoder(frames)
    print(f"encoded {frames.shape[1]} frames -> {tokens.hidden_states.shape[1]} tokens of width "
          f"{tokens.hidden_states.shape[2]} ({encoder.tokens_per_frame()} per frame)")
    merged = merge_tokens(tokens.hidden_states, args.budget)
    print(f"merged to {int(merged.lengths[0])} tokens; the largest stands for {int(merged.sizes.max())} inputs")
    print(f"figures in {out.resolve()}")


if __name__ == "__main__":
    main()
