"""TMRoPE ids in eager mode: the tensor builder (``tmrope_position_ids``, with its layout check) against
the host item walk it replaced (still in ``tmrope.py`` for audio-in-video items), side by side.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_tmrope.py``; prints a markdown table of
median milliseconds per call and the ratio walk / tensor (> 1: the tensor builder is faster).
"""

from __future__ import annotations

import torch
from common import format_table, interleaved_medians

from omnikit.fusion import QWEN2_5_OMNI, QWEN3_OMNI, MediaTokens, VisualGrid, tmrope_position_ids
from omnikit.fusion.tmrope import _walk_position_ids

TOKENS = MediaTokens(image=1, video=2, audio=3)


def batch(rows: int, video: VisualGrid, audio: int, text: int) -> tuple[torch.Tensor, dict]:
    """``rows`` equal rows of text, one video, text, one audio clip, text."""
    row = [9] * text + [TOKENS.video] * video.num_tokens + [9] * text + [TOKENS.audio] * audio + [9] * text
    ids = torch.full((rows, len(row)), 9)
    ids[:] = torch.tensor(row)
    return ids, {"videos": [video] * rows, "audios": [audio] * rows}


CASES = {
    "tiny contract (2 x 13)": (batch(2, VisualGrid(1, 2, 2), 2, 2), QWEN2_5_OMNI),
    "8 x (1 video 4x8x8, 50 audio)": (batch(8, VisualGrid(4, 8, 8, 2.0), 50, 16), QWEN2_5_OMNI),
    "4 x (1 video 8x16x16, 500 audio)": (batch(4, VisualGrid(8, 16, 16, 2.0), 500, 64), QWEN2_5_OMNI),
    "4 x (same), Qwen3 scheme": (batch(4, VisualGrid(8, 16, 16, 2.0), 500, 64), QWEN3_OMNI),
}


def timed(ids: torch.Tensor, items: dict, scheme) -> list[str]:
    """One table row: median ms of the walk and of the tensor builder, and their ratio."""
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[-1, -2:] = False  # the last row right padded
    fns = {
        "walk": lambda: _walk_position_ids(TOKENS.modality_ids(ids), (), items["videos"], items["audios"], scheme,
                                           mask),
        "tensor": lambda: tmrope_position_ids(ids, TOKENS, **items, scheme=scheme, key_padding_mask=mask),
    }
    walk, _ = fns["walk"]()
    assert torch.allclose(fns["tensor"]()[0].double(), walk.double(), atol=1e-3)
    times = interleaved_medians(fns, repeats=41)
    return [f"{times['walk'] * 1e3:.2f}", f"{times['tensor'] * 1e3:.2f}", f"{times['walk'] / times['tensor']:.1f}x"]


def main() -> None:
    rows = [[name, *timed(ids, items, scheme)] for name, ((ids, items), scheme) in CASES.items()]
    print(format_table(["batch", "host walk (ms)", "tensor builder (ms)", "walk / tensor"], rows))


if __name__ == "__main__":
    main()
