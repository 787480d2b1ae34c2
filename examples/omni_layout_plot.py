"""Draw the token layout and TMRoPE ids of a Qwen2.5-Omni-style prompt (the picture in docs/fusion.md).

    python examples/omni_layout_plot.py --out docs/fusion_layout.png

The prompt: text, an image (1 x 3 x 4 merged tokens), a 3 s video with its own audio interleaved in
2 s chunks (3 steps of 2 x 2 tokens at 1 s per step, 75 audio tokens), then text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from omnikit.fusion import QWEN2_5_OMNI, MediaTokens, VisualGrid, item_positions, tmrope_position_ids
from omnikit.fusion.plotting import plot_token_layout

TOKENS = MediaTokens(image=1, video=2, audio=3)
V_START, V_END, A_START, A_END = 4, 5, 6, 7


def prompt() -> tuple[torch.Tensor, dict]:
    image = VisualGrid(1, 3, 4)
    video = VisualGrid(3, 2, 2, seconds_per_step=1.0, audio_tokens=75)
    _, order = item_positions(video, "video", QWEN2_5_OMNI)
    body = [TOKENS.video if int(k) == 2 else TOKENS.audio for k in order]
    ids = ([10, 11, 12, V_START] + [TOKENS.image] * image.num_tokens + [V_END, 13, V_START, A_START] + body
           + [A_END, V_END, 14, 15, 16, 17])
    return torch.tensor(ids), {"images": [image], "videos": [video]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/fusion_layout.png"))
    args = parser.parse_args()
    ids, items = prompt()
    positions, _ = tmrope_position_ids(ids, TOKENS, scheme=QWEN2_5_OMNI, **items)
    path = plot_token_layout(ids, positions, TOKENS, args.out,
                             title="Qwen2.5-Omni TMRoPE: text, image, video with audio in 2 s chunks, text")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
