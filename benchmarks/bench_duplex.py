"""Full-duplex Moshi on the CPU: per-frame latency and real-time factor of the audio loop, and omnikit vs
transformers on the same checkpoint (greedy generation per frame, Mimi encode and decode).

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_duplex.py [--frames 25] [--repeats 3]

The model is "tiny but real": the published Mimi (24 kHz, 12.5 frames/s, 1920-sample frames, SEANet
and 8-layer transformers on both sides), 8 codebooks of 2048 per speaker, text vocab 32000, and a
small language model (temporal transformer dim 256, 4 layers; per-codebook depth decoder dim 128,
2 layers). A random transformers ``MoshiForConditionalGeneration`` of that config is saved and
loaded with ``omnikit.convert.load_hf``, so both libraries run the same weights in float32.

Rows: ``converse`` (omnikit's live loop: Mimi encodes the user's frame, the temporal and depth
transformers take a step, Mimi decodes the reply frame) per frame, median and 90th percentile over
the frames of ``--repeats`` clips, and its real-time factor (time per frame / 80 ms; below 1 keeps up); then
medians over ``--repeats`` interleaved rounds of: greedy generation of ``--frames`` frames of codes
from a one-frame prompt (transformers' ``generate`` vs omnikit's ``generate``), and whole-clip Mimi
encode and decode of ``--frames`` frames. The machine is shared: absolute times are noisy; the
ratios come from the same process and rounds.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import format_table, interleaved_samples

from omnikit.convert import load_hf


def build(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    import transformers

    mimi = transformers.MimiConfig()  # the published kyutai/mimi structure
    config = transformers.MoshiConfig(
        vocab_size=32000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, ffn_dim=1408,
        num_codebooks=8, audio_encoder_config=mimi.to_dict(),
        depth_decoder_config=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, ffn_dim=704),
    )
    torch.manual_seed(0)
    hf = transformers.MoshiForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "lm_heads" in name or "projections" in name or ".linear." in name:
                param.mul_(0.05)  # transformers initialises per-codebook weights with unit variance
    hf.save_pretrained(folder)
    return hf, load_hf(folder).eval()


def converse_latency(moshi: torch.nn.Module, frames: int) -> list[float]:
    """Seconds of each step of the audio loop over a clip of ``frames`` frames."""
    codec = moshi.audio_encoder
    wav = 0.1 * torch.randn(1, 1, frames * codec.hop, generator=torch.Generator().manual_seed(0))
    times, start = [], time.perf_counter()
    for _ in moshi.converse(wav.split(codec.hop, dim=-1)):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hf, moshi = build(Path(tmp))
    codec = moshi.audio_encoder
    frame_s = 1 / codec.frame_rate
    with torch.no_grad():
        converse_latency(moshi, 3)  # warm-up
        # the first step of a clip holds no reply frame yet
        steps = [t for _ in range(args.repeats) for t in converse_latency(moshi, args.frames)[1:]]
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, 32000, (1, 1), generator=g)
    user, said = (torch.randint(0, 2048, (1, 8, 1), generator=g) for _ in "us")
    wav = 0.1 * torch.randn(1, 1, args.frames * codec.hop, generator=g)
    codes = codec.encode(wav)
    new = args.frames + 1

    def hf_generate() -> object:
        return hf.generate(input_ids=text, user_audio_codes=user, moshi_audio_codes=said, max_new_tokens=new,
                           do_sample=False, return_audio_waveforms=False, return_audio_codes=True)

    cases = {
        "generate": (hf_generate, lambda: moshi.generate(text, user, said, max_new_tokens=new)),
        "Mimi encode": (lambda: hf.audio_encoder.encode(wav, num_quantizers=8), lambda: codec.encode(wav)),
        "Mimi decode": (lambda: hf.audio_encoder.decode(codes), lambda: codec.decode(codes)),
    }
    with torch.no_grad():
        samples = interleaved_samples({f"{n}|{who}": fn for n, pair in cases.items()
                                       for who, fn in zip(("hf", "ours"), pair)}, repeats=args.repeats, warmup=1)
    median = {k: statistics.median(v) / args.frames for k, v in samples.items()}
    p90 = sorted(steps)[int(0.9 * (len(steps) - 1))]
    rows = [["converse (audio in, text + audio out), per frame", "-", f"{1000 * statistics.median(steps):.1f} "
             f"(p90 {1000 * p90:.1f})", f"RTF {statistics.median(steps) / frame_s:.2f}"]]
    for name in cases:
        hf_s, ours_s = median[f"{name}|hf"], median[f"{name}|ours"]
        rows.append([f"{name}, per frame", f"{1000 * hf_s:.1f}", f"{1000 * ours_s:.1f}", f"{hf_s / ours_s:.2f}x"])
    print(f"{datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.frames} frames ({args.frames * frame_s:.1f} s of audio), {args.repeats} rounds")
    print(format_table(["case", "transformers (ms)", "omnikit (ms)", "speed-up / RTF"], rows))


if __name__ == "__main__":
    main()
