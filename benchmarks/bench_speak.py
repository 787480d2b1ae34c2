"""Speech latency of a loaded Qwen3-Omni: time to first audio and real-time factor, omnikit streamed vs
transformers' offline ``generate``, and where omnikit's time goes.

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_speak.py [--repeats 3] [--new-tokens 24] [--frames 48]

The model is a small random ``Qwen3OmniMoeForConditionalGeneration`` with the published codec layout (16
codebooks of 2048, Code2Wav at 12.5 frames/s and 24 kHz with its 72-frame attention window, the Talker's
3072-id codec vocabulary) and small widths (Thinker 256 wide, 4 MoE layers of 8 experts; Talker 256 wide, 4
MoE layers; code predictor 2 layers), saved and loaded with ``load_hf(path, part="omni")``. The prompt is a
user turn with 2 s of audio (128 mel bins) and text; decoding is greedy (``talker_do_sample=False``) for
``--new-tokens`` text tokens and at most ``--frames`` code frames. Rows, timed round-robin (medians of
``--repeats`` rounds after a warm-up round):

- transformers ``generate(return_audio=True)``: offline, so its first audio is its whole run;
- omnikit ``generate`` (offline, the same decoding);
- omnikit ``stream(chunk_frames=4)``: first audio when the first 4 frames are decoded (dynamic and static cache).

Then one instrumented streamed run splits omnikit's time per stage (Thinker prefill with the media encoders,
Thinker decode step, Talker decode step and code predictor per frame, Code2Wav per 4-frame chunk), and the
streamed waveform is compared with the offline one: Code2Wav streaming (its state carried between chunks, the
default) and chunks re-decoded with 25 frames of left context (transformers' ``chunked_decode`` scheme).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import format_table

from omnikit.convert import hf_inputs, load_hf

ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [12, 10, 10], "interleaved": True}
IM_START, IM_END, USER, ASSISTANT, TTS_PAD, TTS_BOS, TTS_EOS = 2000, 2001, 2002, 2003, 2004, 2005, 2006
AUDIO, IMAGE, VIDEO, A_START, A_END = 2010, 2011, 2012, 2013, 2014
CONFIG = dict(
    im_start_token_id=IM_START, im_end_token_id=IM_END, user_token_id=USER, assistant_token_id=ASSISTANT,
    tts_pad_token_id=TTS_PAD, tts_bos_token_id=TTS_BOS, tts_eos_token_id=TTS_EOS,
    thinker_config=dict(
        audio_token_id=AUDIO, image_token_id=IMAGE, video_token_id=VIDEO, audio_start_token_id=A_START,
        audio_end_token_id=A_END, vision_start_token_id=2015, vision_end_token_id=2016,
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256,
                          d_model=64, n_window=50, output_dim=256, n_window_infer=400, downsample_hidden_size=32),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=16,
                           out_hidden_size=256, deepstack_visual_indexes=[0]),
        text_config=dict(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, moe_intermediate_size=128,
                         num_experts=8, num_experts_per_tok=2, rope_parameters=ROPE),
    ),
    talker_config=dict(
        text_config=dict(vocab_size=3072, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, moe_intermediate_size=128,
                         shared_expert_intermediate_size=256, num_experts=8, num_experts_per_tok=2,
                         rope_parameters=ROPE),
        code_predictor_config=dict(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_code_groups=16,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
        num_code_groups=16, thinker_hidden_size=256, accept_hidden_layer=2, spatial_merge_size=2,
        speaker_id={"ethan": 2302}, audio_token_id=AUDIO, image_token_id=IMAGE, video_token_id=VIDEO,
        audio_start_token_id=A_START, vision_start_token_id=2015,
        codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_nothink_id=2155,
        codec_think_bos_id=2156, codec_think_eos_id=2157,
    ),
    code2wav_config=dict(codebook_size=2048, hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
                         sliding_window=72, intermediate_size=256, num_hidden_layers=4, num_quantizers=16,
                         upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], decoder_dim=128),
)


def build(directory: Path) -> tuple[torch.nn.Module, Path]:
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration

    torch.manual_seed(0)
    hf = Qwen3OmniMoeForConditionalGeneration(Qwen3OmniMoeConfig(**CONFIG)).eval()
    with torch.no_grad():  # keep the random waveform off the [-1, 1] clamp
        last = hf.code2wav.decoder[-1].conv
        last.weight.mul_(1e-2)
        last.bias.zero_()
    hf.save_pretrained(directory)
    return hf, directory


def prompt(seed: int = 0, mel_frames: int = 200) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, 1900, (n,), generator=g).tolist()
    ids = [IM_START, USER, 9, A_START, *[AUDIO] * (mel_frames // 100 * 13), A_END, *text(8), IM_END, 9,
           IM_START, ASSISTANT, 9]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "input_features": torch.randn(1, 128, mel_frames, generator=g),
            "feature_attention_mask": torch.ones(1, mel_frames, dtype=torch.long)}


class StageTimer:
    """Wraps callables on an instance so each call's seconds are recorded under a label."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: Any, name: str, label: str | Callable[..., str]) -> None:
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            key = label(*args, **kwargs) if callable(label) else label
            self.seconds[key].append(time.perf_counter() - start)
            return out

        setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    hf, path = build(Path(tempfile.mkdtemp()) / "qwen3_omni_bench")
    omni = load_hf(path, part="omni")
    inputs = prompt()
    ours = hf_inputs(omni, inputs)
    greedy = dict(talker_do_sample=False, thinker_eos_token_id=IM_END, talker_max_new_tokens=args.frames + 1)
    rate = omni.sample_rate

    def transformers_run() -> dict[str, float]:
        start = time.perf_counter()
        with torch.no_grad():
            _, wav = hf.generate(**inputs, speaker="Ethan", thinker_max_new_tokens=args.new_tokens, **greedy)
        total = time.perf_counter() - start
        return {"first": total, "total": total, "audio": wav.shape[-1] / rate}

    def offline_run() -> dict[str, float]:
        start = time.perf_counter()
        out = omni.generate(**ours, max_new_tokens=args.new_tokens, **greedy)
        total = time.perf_counter() - start
        return {"first": total, "total": total, "audio": out.wav.shape[-1] / rate}

    def stream_run(cache: str) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            first, samples = None, 0
            for chunk in omni.stream(**ours, max_new_tokens=args.new_tokens, chunk_frames=4, cache=cache, **greedy):
                if first is None and chunk.wav.shape[-1]:
                    first = chunk.elapsed
                samples += chunk.wav.shape[-1]
                total = chunk.elapsed
            return {"first": first, "total": total, "audio": samples / rate}

        return run

    runs = {"transformers generate (offline)": transformers_run, "omnikit generate (offline)": offline_run,
            "omnikit stream, dynamic cache": stream_run("dynamic"),
            "omnikit stream, static cache": stream_run("static")}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for round_ in range(args.repeats + 1):
        for name, run in runs.items():
            result = run()
            if round_:
                results[name].append(result)
    reference = statistics.median(r["first"] for r in results["transformers generate (offline)"])
    rows = []
    for name, values in results.items():
        first = statistics.median(r["first"] for r in values)
        total = statistics.median(r["total"] for r in values)
        audio = values[0]["audio"]
        rows.append([name, f"{1000 * first:.0f}", f"{reference / first:.2f}", f"{1000 * total:.0f}",
                     f"{audio:.2f}", f"{total / audio:.2f}"])
    print(f"reply: {args.new_tokens} text tokens at most, {args.frames} code frames at most (12.5 frames/s)")
    print(format_table(["run", "first audio (ms)", "speed-up of first audio vs transformers", "total (ms)",
                        "audio (s)", "real-time factor"], rows))

    timer = StageTimer()
    text = omni.thinker.text_model
    timer.wrap(omni.thinker, "fuse", "Thinker media encoders (audio tower)")
    timer.wrap(text, "forward", "Thinker prefill (language model)")
    timer.wrap(text, "decode_step", "Thinker decode step")
    timer.wrap(omni, "_talker_step", "Talker decode step (MoE decoder)")
    timer.wrap(omni.talker, "sample_residual", "code predictor (15 codes of a frame)")
    timer.wrap(omni.vocoder, "decode", "Code2Wav decode (4 frames, streaming state)")
    chunks = list(omni.stream(**ours, max_new_tokens=args.new_tokens, chunk_frames=4, **greedy))
    stage_rows = [[label, len(values), f"{1000 * statistics.median(values):.2f}", f"{1000 * sum(values):.0f}"]
                  for label, values in timer.seconds.items()]
    total = chunks[-1].elapsed
    print(format_table(["stage (instrumented streamed run)", "calls", "median ms per call", "total ms"], stage_rows))
    print(f"instrumented run: {1000 * total:.0f} ms in all")

    offline = omni.generate(**ours, max_new_tokens=args.new_tokens, **greedy).wav
    for context in (25, None):
        chunks = list(omni.stream(**ours, max_new_tokens=args.new_tokens, chunk_frames=4,
                                  decoder_options={"left_context": context}, **greedy))
        streamed = torch.cat([c.wav for c in chunks], dim=-1)
        diff = float((streamed - offline).abs().max() / offline.abs().max())
        how = "Code2Wav streaming state" if context is None else f"re-decoded left context of {context} frames"
        print(f"streamed vs offline waveform, {how}: max |difference| / peak = {diff:.2e}")


if __name__ == "__main__":
    main()
