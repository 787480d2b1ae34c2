"""Turn a sound into encoder tokens and codec codes, and back; plot the mel and the codes.

Run: ``python examples/audio_tokenize.py [--out audio_example]``. Writes ``input.wav`` (a synthetic
vowel-like sweep), ``reconstruction.wav`` and ``mel_and_codes.png``. Weights are random (no network
here): load real ones with ``omnikit.create_model(name, pretrained=DIR)`` or
``omnikit.convert.from_transformers(...)`` / ``load_encodec(path)``.
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import omnikit
from omnikit.audio import log_mel_spectrogram, resample


def synth_vowels(seconds: float = 3.0, rate: int = 16000) -> torch.Tensor:
    """A glottal-pulse train with a gliding pitch through two formant resonances: speech-like, (S,)."""
    t = torch.arange(int(seconds * rate)) / rate
    pitch = 110 + 60 * torch.sin(2 * torch.pi * 0.5 * t)
    phase = torch.cumsum(pitch / rate, 0)
    wav = sum(torch.sin(2 * torch.pi * k * phase) / k * torch.exp(-((k * pitch - f) / 300) ** 2)
              for k in range(1, 40) for f in (700 + 300 * torch.sin(2 * torch.pi * 0.7 * t), 1200.0))
    envelope = 0.5 * (1 - torch.cos(2 * torch.pi * torch.clamp(t / seconds, 0, 1)))
    return (0.3 * wav * envelope / wav.abs().max()).float()


def write_wav(path: Path, wav: torch.Tensor, rate: int) -> None:
    pcm = (wav.clamp(-1, 1) * 32767).short().numpy().tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm)


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    with wave.open(str(path), "rb") as f:
        pcm = torch.frombuffer(bytearray(f.readframes(f.getnframes())), dtype=torch.int16)
        return pcm.float() / 32768, f.getframerate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("audio_example"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    write_wav(args.out / "input.wav", synth_vowels(), 16000)
    wav, rate = read_wav(args.out / "input.wav")

    # 1. encoder tokens for an LLM: 128-mel log-mel -> Qwen2.5-Omni-style encoder, 25 tokens/s
    mel, frames = log_mel_spectrogram(wav[None], sample_rate=rate, n_mels=128)
    encoder = omnikit.create_model("qwen2_5_omni_audio", dim=256, depth=2, num_heads=4, mlp_hidden=512,
                                   output_dim=512).eval()
    with torch.no_grad():
        tokens = encoder(mel, frames)
    seconds, shape = wav.shape[0] / rate, tuple(tokens.hidden_states.shape)
    print(f"{seconds:.1f} s of audio -> mel {tuple(mel.shape)} -> tokens {shape}")

    # 2. codec codes for a Talker: 24 kHz causal SEANet codec, 75 frames/s, 8 codebooks
    codec = omnikit.create_model("seanet_codec_24khz")
    wav24, _ = resample(wav[None, None], rate, codec.sample_rate)
    with torch.no_grad():
        codec.train()(wav24)  # one training-mode pass: k-means fits the (untrained) codebooks to this clip
        codes = codec.eval().encode(wav24)
        audio = codec.decode(codes)
    print(f"codec: {codec.num_codebooks} x {codec.codebook_size} codes at {codec.frame_rate:g} Hz -> "
          f"codes {tuple(codes.shape)} -> audio {tuple(audio.shape)}")
    write_wav(args.out / "reconstruction.wav", audio[0, 0] / audio.abs().max().clamp(min=1e-6) * 0.3,
              codec.sample_rate)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), constrained_layout=True)
    top.imshow(mel[0], origin="lower", aspect="auto", extent=(0, mel.shape[-1] / 100, 0, 128), cmap="magma")
    top.set(title="log-mel (Whisper normalisation)", xlabel="seconds", ylabel="mel bin")
    bottom.imshow(codes[0], aspect="auto", interpolation="nearest", cmap="tab20",
                  extent=(0, codes.shape[-1] / codec.frame_rate, codec.num_codebooks - 0.5, -0.5))
    bottom.set(title="codec codes (untrained codec, k-means codebooks)", xlabel="seconds", ylabel="codebook")
    fig.savefig(args.out / "mel_and_codes.png", dpi=100)
    print(f"wrote {args.out / 'input.wav'}, {args.out / 'reconstruction.wav'}, {args.out / 'mel_and_codes.png'}")


if __name__ == "__main__":
    main()
