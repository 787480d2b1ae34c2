"""``examples/train_tiny_speech.py``: its stand-in codec and metrics, and a short run in which the
Thinker-side fine-tune degrades the frozen Talker's generated codes and TalkerAlignment("anchor")
keeps them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from train_tiny_speech import CHORDS, speech_model, tone


def test_frame_codec_codes_the_spoken_answers_exactly_and_wrong_codes_sound_different() -> None:
    torch.manual_seed(0)
    codec = speech_model("delay").codec
    answers = torch.stack([tone(chord, 0.16) for chord in CHORDS])[:, None]  # (4, 1, 2560)
    codes = codec.encode(answers)
    assert codes.shape == (4, 4, 8) and codes.max() < codec.codebook_size
    torch.testing.assert_close(codec.decode(codes), answers, rtol=0, atol=1e-4)
    for k in range(4):
        assert len(codes[:, k, 0].unique()) == 4  # every codebook tells the answers apart
        assert len(codes[:, k].unique()) > 8
        distances = torch.cdist(codec.codebooks[k], codec.codebooks[k]) + torch.eye(codec.codebook_size)
        assert distances.min() > 0.01  # no two codes sound alike
    wrong = codes.clone()
    wrong[:, 0, 3] = (wrong[:, 0, 3] + 1) % codec.codebook_size
    changed = codec.decode(wrong) - answers
    assert changed[..., 3 * 320: 3 * 320 + 80].abs().amax() > 0.05  # frame 3's first quarter
    assert changed[..., : 3 * 320].abs().amax() < 1e-4 and changed[..., 3 * 320 + 80:].abs().amax() < 1e-4


@pytest.mark.slow
def test_thinker_side_fine_tune_degrades_the_talker_and_anchor_keeps_it() -> None:
    """A short run (100 joint steps, 30 fine-tune steps, 64 samples): the plain fine-tune drops the
    generated code accuracy and raises the mel distance; with "anchor" both stay within 2 points."""
    from train_tiny_speech import run

    torch.set_num_threads(1)
    r = run(pretrain_steps=100, finetune_steps=30, batch=16, samples=64, modes=(None, "anchor"))
    before, plain, anchor = r["before fine-tune"], r["Thinker-side fine-tune"], r["+ TalkerAlignment('anchor')"]
    assert before["generated"] > 0.9
    assert plain["generated"] < before["generated"] - 0.3 and plain["mel"] > before["mel"] + 0.1
    assert abs(anchor["generated"] - before["generated"]) <= 0.02 and anchor["mel"] < before["mel"] + 0.02
    assert plain["reply_b"] > 0.8 and anchor["reply_b"] > 0.8  # both learned task B
