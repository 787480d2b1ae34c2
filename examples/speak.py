"""Ask a published omni model a question with an audio clip and write its spoken answer to a WAV file.

    python examples/speak.py SNAPSHOT --audio question.wav --question "What do you hear?"
    python examples/speak.py                  # offline: writes a tiny random Qwen3-Omni snapshot first

``SNAPSHOT`` is a local Hub-layout Qwen3-Omni directory (``Qwen3OmniMoeForConditionalGeneration`` with its
Talker). With a real snapshot transformers' processor (installed) builds the prompt from the chat template;
the tiny random snapshot's prompt is built by hand. The answer is streamed: text and speech advance together
and the script prints the time to first audio and the real-time factor (generation time / audio duration).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import wave
from pathlib import Path

import torch

from omnikit.audio import LogMelSpectrogram
from omnikit.convert import build_hf, hf_inputs, load_hf, save_hf
from omnikit.convert.tiny_configs import qwen3_omni_tiny_config


def tiny_random_snapshot(directory: Path) -> Path:
    """A Qwen3-Omni snapshot (Thinker, Talker, Code2Wav) with random weights, in several shards."""
    torch.manual_seed(0)
    return save_hf(build_hf(qwen3_omni_tiny_config(), part="omni"), directory, max_shard_size="200KB")


def clip(seconds: float = 2.0, rate: int = 16000) -> torch.Tensor:
    """A rising tone ``(samples,)`` standing in for a recorded question."""
    t = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * math.pi * (220 + 110 * t) * t)


def tiny_prompt(omni: torch.nn.Module, audio: torch.Tensor, question_tokens: int = 5) -> dict[str, torch.Tensor]:
    """What the processor would return for "<audio> question" in a user turn plus the generation prompt."""
    mel, frames = LogMelSpectrogram(16)(audio[None, None])
    count = int(omni.thinker.audio_encoder.output_lengths(frames)[0])
    question = torch.randint(0, 140, (question_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    ids = [141, 143, 9, 155, *[150] * count, 156, *question, 142, 9, 141, 144, 9]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "input_features": mel, "feature_attention_mask": torch.ones(1, mel.shape[-1], dtype=torch.long)}


def processor_prompt(snapshot: Path, audio: torch.Tensor, question: str) -> dict[str, torch.Tensor]:
    """The published processor's inputs for a user turn with the clip and the question."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(snapshot)
    turn = [{"role": "user", "content": [{"type": "audio", "audio": "clip"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=text, audio=[audio.numpy()], return_tensors="pt", padding=True))


def write_wav(path: Path, wav: torch.Tensor, rate: int) -> None:
    """16-bit mono PCM."""
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.numpy().tobytes())


def speak(snapshot: Path | None, out: Path, *, audio: torch.Tensor | None = None, question: str = "What is this?",
          max_new_tokens: int = 16, max_frames: int = 24, chunk_frames: int = 4) -> dict[str, float]:
    """Stream the answer to ``out``; returns ``{"first_audio_ms", "rtf", "seconds", "tokens"}``."""
    tiny = snapshot is None
    snapshot = tiny_random_snapshot(Path(tempfile.mkdtemp()) / "qwen3_omni_tiny") if tiny else snapshot
    omni = load_hf(snapshot, part="omni", dtype=torch.float32)
    audio = clip() if audio is None else audio
    inputs = tiny_prompt(omni, audio) if tiny else processor_prompt(snapshot, audio, question)
    first, pieces, tokens = None, [], 0
    for chunk in omni.stream(**hf_inputs(omni, inputs), max_new_tokens=max_new_tokens, chunk_frames=chunk_frames,
                             talker_max_new_tokens=max_frames + 1, generator=torch.Generator().manual_seed(0)):
        if first is None and chunk.wav.shape[-1]:
            first = chunk.elapsed
        pieces.append(chunk.wav[0, 0])
        tokens += chunk.text_tokens.shape[1]
        elapsed = chunk.elapsed
    wav = torch.cat(pieces)
    write_wav(out, wav, omni.sample_rate)
    seconds = wav.shape[0] / omni.sample_rate
    return {"first_audio_ms": 1000 * (first if first is not None else elapsed), "seconds": seconds,
            "rtf": elapsed / max(seconds, 1e-9), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", nargs="?", type=Path, help="Hub-layout Qwen3-Omni directory; default: tiny random")
    parser.add_argument("--audio", type=Path, help="16 kHz mono 16-bit WAV with the question (default: a tone)")
    parser.add_argument("--question", default="What do you hear?")
    parser.add_argument("--out", type=Path, default=Path("answer.wav"))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    audio = None
    if args.audio is not None:
        with wave.open(str(args.audio), "rb") as source:
            audio = torch.frombuffer(bytearray(source.readframes(source.getnframes())), dtype=torch.int16) / 32768
    stats = speak(args.snapshot, args.out, audio=audio, question=args.question, max_new_tokens=args.max_new_tokens,
                  max_frames=4 * args.max_new_tokens)
    print(f"wrote {args.out}: {stats['seconds']:.2f} s of speech, {stats['tokens']} text tokens")
    print(f"time to first audio: {stats['first_audio_ms']:.0f} ms, real-time factor {stats['rtf']:.2f}")


if __name__ == "__main__":
    main()
