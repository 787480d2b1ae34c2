"""``examples/speak.py`` offline: it writes a tiny random Qwen3-Omni snapshot (``build_hf`` + ``save_hf``), which
transformers loads, streams a spoken answer to a question with an audio clip and writes it as a WAV."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from speak import speak, tiny_random_snapshot

from omnikit.convert import load_hf
from omnikit.convert.tiny_configs import qwen3_omni_tiny_config


def test_speak_writes_the_streamed_answer(tmp_path) -> None:
    stats = speak(None, tmp_path / "answer.wav", max_new_tokens=4, max_frames=6, chunk_frames=3)
    with wave.open(str(tmp_path / "answer.wav"), "rb") as wav:
        assert wav.getframerate() == 24000 and wav.getnchannels() == 1
        assert wav.getnframes() == round(stats["seconds"] * 24000) > 0
    assert stats["first_audio_ms"] > 0 and stats["rtf"] > 0 and stats["tokens"] >= 1


def test_the_tiny_snapshot_is_a_transformers_checkpoint(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    path = tiny_random_snapshot(tmp_path / "tiny")
    hf = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(path)
    ours = load_hf(path, part="omni").state_dict()
    assert hf.config.talker_config.speaker_id == qwen3_omni_tiny_config()["talker_config"]["speaker_id"]
    assert len(ours) > 0 and torch.equal(ours["talker.codec_head.weight"], hf.talker.codec_head.weight)
