"""Full-duplex Moshi on a WAV file: the user's audio goes in one Mimi frame at a time, the model's
inner-monologue text tokens and the audio of its reply come out frame by frame.

Run: ``python examples/duplex.py [--model DIR] [--wav IN.wav] [--out REPLY.wav] [--seconds S]``.
``--model`` is a Hub snapshot of a ``MoshiForConditionalGeneration`` (``config.json`` + safetensors,
loaded with :func:`omnikit.convert.load_hf`). Without it a tiny random Moshi (``moshi_tiny``) is
written to a temporary folder as such a snapshot first, so the script runs offline in seconds
(its reply is noise: the weights are random). Without ``--wav`` the user says a short chirp.
16-bit PCM WAV files are read and written with the standard library; the input is mixed to mono and
resampled (linear interpolation) to the codec's rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import wave
from pathlib import Path

import torch
import torch.nn.functional as F

import omnikit
from omnikit.convert import load_hf, save_hf


def read_wav(path: Path, rate: int) -> torch.Tensor:
    """A 16-bit PCM WAV file as a mono float waveform ``(1, 1, S)`` at ``rate``."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM samples but got {8 * f.getsampwidth()}-bit")
        frames = torch.frombuffer(bytearray(f.readframes(f.getnframes())), dtype=torch.int16)
        channels, source_rate = f.getnchannels(), f.getframerate()
    wav = frames.float().view(-1, channels).mean(dim=1) / 32768.0
    if source_rate != rate:
        wav = F.interpolate(wav[None, None], size=round(wav.numel() * rate / source_rate), mode="linear")[0, 0]
    return wav.view(1, 1, -1)


def write_wav(path: Path, wav: torch.Tensor, rate: int) -> None:
    """A waveform ``(S,)`` in [-1, 1] as a mono 16-bit PCM WAV file."""
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.numpy().tobytes())


def chirp(seconds: float, rate: int) -> torch.Tensor:
    """A rising tone ``(1, 1, S)`` standing in for the user's voice."""
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * torch.pi * (0.05 * rate + 0.1 * rate * t / seconds) * t)).view(1, 1, -1)


def tiny_snapshot(folder: Path) -> Path:
    """Write a tiny random Moshi as a Hub snapshot (what ``--model`` would point at)."""
    torch.manual_seed(0)
    save_hf(omnikit.create_model("moshi_tiny"), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a MoshiForConditionalGeneration snapshot folder")
    parser.add_argument("--wav", type=Path, help="the user's audio (16-bit PCM WAV)")
    parser.add_argument("--out", type=Path, default=Path("reply.wav"), help="where the reply's audio goes")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the default chirp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        moshi = load_hf(args.model if args.model else tiny_snapshot(Path(tmp))).eval()
    codec = moshi.audio_encoder
    wav = read_wav(args.wav, codec.sample_rate) if args.wav else chirp(args.seconds, codec.sample_rate)
    frames = wav.shape[-1] // codec.hop
    if frames < 1:
        raise SystemExit(f"the input is shorter than one frame ({codec.hop} samples at {codec.sample_rate} Hz)")
    text, reply, start = [], [], time.perf_counter()
    for step in moshi.converse(wav[..., : frames * codec.hop].split(codec.hop, dim=-1)):
        text.append(int(step.text[0]))
        if step.wav is not None:
            reply.append(step.wav[0, 0])
    seconds = time.perf_counter() - start
    write_wav(args.out, torch.cat(reply), codec.sample_rate)
    print(f"{frames} frames ({frames / codec.frame_rate:.2f} s of audio) in {seconds:.2f} s: "
          f"{1000 * seconds / frames:.1f} ms per frame, real-time factor {seconds * codec.frame_rate / frames:.2f}")
    print(f"text tokens: {text}")
    print(f"reply: {args.out} ({len(reply)} frames)")


if __name__ == "__main__":
    main()
