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

ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "interleaved": True}
#: A tiny Qwen3-Omni ``config.json``: ids 150.. are the media placeholders and chat markers of its 160-token
#: vocabulary; the Talker's codec vocabulary is its 32 codes plus 1024 special ids, as published.
TINY = {
    "architectures": ["Qwen3OmniMoeForConditionalGeneration"], "model_type": "qwen3_omni_moe",
    "im_start_token_id": 141, "im_end_token_id": 142, "user_token_id": 143, "assistant_token_id": 144,
    "system_token_id": 145, "tts_pad_token_id": 146, "tts_bos_token_id": 147, "tts_eos_token_id": 148,
    "thinker_config": {
        "audio_token_id": 150, "image_token_id": 151, "video_token_id": 152, "vision_start_token_id": 153,
        "vision_end_token_id": 154, "audio_start_token_id": 155, "audio_end_token_id": 156,
        "audio_config": {"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                         "encoder_ffn_dim": 32, "d_model": 16, "n_window": 50, "output_dim": 32,
                         "n_window_infer": 300, "downsample_hidden_size": 8},
        "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 24, "num_heads": 2, "patch_size": 4,
                          "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 32,
                          "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
        "text_config": {"vocab_size": 160, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                        "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
                        "rope_parameters": ROPE},
    },
    "talker_config": {
        "text_config": {"vocab_size": 32 + 1024, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                        "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24, "num_experts": 4,
                        "num_experts_per_tok": 2, "rope_parameters": ROPE},
        "code_predictor_config": {"vocab_size": 32, "hidden_size": 32, "intermediate_size": 48,
                                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "head_dim": 8, "num_code_groups": 4,
                                  "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
        "num_code_groups": 4, "thinker_hidden_size": 32, "accept_hidden_layer": 1, "speaker_id": {"ethan": 1050},
        "spatial_merge_size": 2,
        "codec_nothink_id": 1040, "codec_think_bos_id": 1041, "codec_think_eos_id": 1042, "codec_pad_id": 1043,
        "codec_bos_id": 1044, "codec_eos_token_id": 1045, "audio_token_id": 150, "image_token_id": 151,
        "video_token_id": 152, "vision_start_token_id": 153, "audio_start_token_id": 155,
    },
    "code2wav_config": {"codebook_size": 32, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 4,
                        "sliding_window": 8, "intermediate_size": 48, "num_hidden_layers": 2, "num_quantizers": 4,
                        "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2], "decoder_dim": 32},
}


def tiny_random_snapshot(directory: Path) -> Path:
    """A Qwen3-Omni snapshot (Thinker, Talker, Code2Wav) with random weights, in several shards."""
    torch.manual_seed(0)
    return save_hf(build_hf(TINY, part="omni"), directory, max_shard_size="200KB")


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
