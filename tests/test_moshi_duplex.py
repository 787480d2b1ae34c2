"""The full-duplex loop on Moshi: user audio frames in, text and reply audio frames out, one frame at a time,
equal to the same inputs run offline (whole-clip Mimi, teacher-forced forward, whole-clip decode)."""

from __future__ import annotations

import torch

import omnikit
from omnikit.audio.layouts import delay_codes

FRAMES = 8


def _moshi() -> torch.nn.Module:
    torch.manual_seed(0)
    moshi = omnikit.create_model("moshi_tiny").eval()
    with torch.no_grad():
        for layer in moshi.audio_encoder.semantic.layers[:] + moshi.audio_encoder.acoustic.layers[:]:
            layer.embed_sum.normal_()
    return moshi


def test_audio_loop_equals_offline():
    moshi = _moshi()
    codec = moshi.audio_encoder
    wav = torch.randn(2, 1, FRAMES * codec.hop, generator=torch.Generator().manual_seed(1))
    steps = list(moshi.converse(wav.split(codec.hop, dim=-1)))
    assert len(steps) == FRAMES
    with torch.no_grad():
        heard = codec.encode(wav)  # (B, K, F) whole clip
        text = torch.stack([s.text for s in steps], dim=1)
        said = torch.stack([s.codes for s in steps], dim=2)  # step layout
        user = delay_codes(heard, moshi.pad, moshi.delays)[..., :FRAMES]
        text_logits, code_logits = moshi.split_logits(moshi(text, said, user))
        # greedy: every streamed token is the offline argmax given the same past
        assert torch.equal(text_logits.argmax(-1), text)
        started = said != moshi.pad
        assert torch.equal(code_logits.argmax(-1).transpose(1, 2)[started], said[started])
        assert not started[:, 1:, 0].any()  # the acoustic codebooks start one step late
        frames = torch.stack([s.frame for s in steps[1:]], dim=2)
        assert torch.equal(frames, torch.cat((said[:, :1, :-1], said[:, 1:, 1:]), dim=1))
        reply = torch.cat([s.wav for s in steps[1:]], dim=-1)
        torch.testing.assert_close(reply, codec.decode(frames), rtol=1e-5, atol=1e-6)
    assert steps[0].wav is None and reply.shape == (2, 1, (FRAMES - 1) * codec.hop)


def test_audio_loop_equals_the_code_loop():
    """Encoding the user's audio inside the loop gives the same steps as feeding its whole-clip codes."""
    moshi = _moshi()
    codec = moshi.audio_encoder
    wav = torch.randn(1, 1, FRAMES * codec.hop, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        codes = list(moshi.stream(codec.encode(wav).unbind(2)))
    audio = list(moshi.converse(wav.split(codec.hop, dim=-1)))
    for a, c in zip(audio, codes, strict=True):
        assert torch.equal(a.text, c.text) and torch.equal(a.codes, c.codes)


def test_example_runs_on_a_wav_file(tmp_path):
    """``examples/duplex.py`` on a WAV file (another rate, stereo) with its offline tiny snapshot."""
    import os
    import subprocess
    import sys
    import wave
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    t = torch.arange(1600) / 1600
    pcm = (0.3 * torch.sin(2 * torch.pi * 200 * t) * 32767).to(torch.int16)
    with wave.open(str(tmp_path / "in.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(1600)
        f.writeframes(torch.stack((pcm, pcm), dim=1).numpy().tobytes())
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "examples" / "duplex.py"), "--wav", str(tmp_path / "in.wav"),
                           "--out", str(tmp_path / "reply.wav")], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert "50 frames" in done.stdout and "real-time factor" in done.stdout  # 1 s at 800 Hz, 16-sample hop
    with wave.open(str(tmp_path / "reply.wav"), "rb") as f:
        assert (f.getframerate(), f.getnframes()) == (800, 49 * 16)


def test_static_cache_loop_equals_the_growable_one():
    moshi = _moshi()
    user = torch.randint(0, 16, (1, 3, FRAMES), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        growable = list(moshi.stream(user.unbind(2)))
        static = list(moshi.stream(user.unbind(2), cache="static", max_len=FRAMES))
    for a, b in zip(growable, static, strict=True):
        assert torch.equal(a.text, b.text) and torch.equal(a.codes, b.codes)


def test_bad_inputs_name_the_argument():
    import pytest

    from omnikit.speech.per_codebook_depth import PerCodebookLinear

    moshi = _moshi()
    hop = moshi.audio_encoder.hop
    with pytest.raises(ValueError, match="user_audio"):
        list(moshi.converse([torch.zeros(1, 1, hop + 1)]))
    with pytest.raises(ValueError, match="user_codes"):
        moshi.generate(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long),
                       torch.zeros(1, 3, 2, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        moshi.generate(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long),
                       torch.zeros(1, 3, 2, dtype=torch.long), max_new_tokens=0)
    with pytest.raises(ValueError, match="holds 3"):
        PerCodebookLinear(3, 4, 5)(torch.zeros(1, 2, 4), start=2)
    with pytest.raises(ValueError, match="codebook_size"):
        omnikit.create_model("moshi_tiny", codebook_size=32)
    with pytest.raises(ValueError, match="per_codebook_depth"):
        omnikit.create_model("moshi_tiny", per_codebook_depth=False)
