"""Regression guard: the headline time ratios, re-measured quickly and compared with the last recorded table.

Usage (from the repository root, one thread)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/regressions.py              # measure and compare
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/regressions.py --record     # ... and store the baseline
    PYTHONPATH=. python benchmarks/regressions.py --dry                          # build and call each case once

Every case times two callables on the same inputs in interleaved rounds: ``ours`` and a reference
(transformers, vector-quantize-pytorch, a dense layer, a full decode, ...). Its ratio is
``median(ours) / median(reference)`` (< 1: omnikit faster; for the streamed first chunk, time to the
first chunk / time of the whole reply). Each round also times the reference a second time: the A/A
ratio of those two identical calls is this run's noise for the case. A case has *moved* when its
ratio differs from the baseline (``benchmarks/regressions_baseline.json``) by more than
``max(2 x the largest A/A deviation of the run, --floor)``. Times are the process's CPU time
(``time.process_time``, one thread: on a shared machine wall time mostly measures waiting).
Sizes are small so the whole run takes a few minutes; the ratios are those of these sizes, not
of the published-size tables in ``docs/benchmarks.md``. Run it before merging a change that may
affect performance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import transformers
from common import format_table, interleaved_samples

import omnikit
from omnikit.convert import from_transformers, load_hf

Fn = Callable[[], object]
BASELINE = Path(__file__).with_name("regressions_baseline.json")
AUDIO_TOWER = dict(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024, num_mel_bins=128)


def audio_short() -> tuple[Fn, Fn]:
    """Qwen2.5-Omni audio encoder, clips of 137 / 1003 / 451 / 200 frames, vs transformers."""
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as q25

    hf = q25.Qwen2_5OmniAudioEncoder(transformers.Qwen2_5OmniAudioEncoderConfig(**AUDIO_TOWER, output_dim=512))
    ours = from_transformers(hf.eval()).eval()
    frames = (137, 1003, 451, 200)
    lengths = torch.tensor(frames)
    x = torch.randn(len(frames), 128, max(frames))
    packed = torch.cat([x[b, :, :n] for b, n in enumerate(frames)], dim=1)
    return torch.no_grad()(lambda: ours(x, lengths)), torch.no_grad()(lambda: hf(packed, feature_lens=lengths))


def whisper_encoder() -> tuple[Fn, Fn]:
    """Whisper encoder (2 layers x 256, 10 s windows), 2 clips, vs transformers."""
    from transformers.models.whisper import modeling_whisper as w

    config = transformers.WhisperConfig(**{**AUDIO_TOWER, "num_mel_bins": 80}, max_source_positions=500)
    hf = w.WhisperEncoder(config).eval()
    ours = from_transformers(hf).eval()
    x = torch.randn(2, 80, 1000)
    return torch.no_grad()(lambda: ours(x)), torch.no_grad()(lambda: hf(x))


def decoder_layer() -> tuple[Fn, Fn]:
    """Qwen3 decoder layer forward + backward (dim 256, 256 tokens) vs transformers."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

    config = transformers.Qwen3Config(hidden_size=256, intermediate_size=704, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=64, attn_implementation="sdpa")
    hf = Qwen3DecoderLayer(config, 0)
    ours = from_transformers(hf)
    x = torch.randn(1, 256, 256, requires_grad=True)
    rope = Qwen3RotaryEmbedding(config)(x, torch.arange(256)[None])
    return (lambda: ours(x).sum().backward(),
            lambda: hf(x, attention_mask=None, position_embeddings=rope).sum().backward())


def _tiny_lm(directory: str) -> transformers.PreTrainedModel:
    config = transformers.Qwen3Config(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=1024)
    hf = transformers.Qwen3ForCausalLM(config).eval()
    hf.save_pretrained(directory)
    return hf


def greedy_decode(directory: str) -> tuple[Fn, Fn]:
    """Greedy decoding, eager, 32 new tokens after 16, vs transformers' ``generate``."""
    hf = _tiny_lm(directory)
    ours = load_hf(directory).eval()
    ids = torch.randint(0, 1024, (1, 16))
    return (lambda: ours.generate(ids, max_new_tokens=32),
            torch.no_grad()(lambda: hf.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)))


def compiled_decode(directory: str) -> tuple[Fn, Fn]:
    """Greedy decoding with the static cache and every decode step compiled (Inductor's default mode), 32
    new tokens after 16, vs transformers' eager ``generate``; the compile happens here, before timing."""
    hf = _tiny_lm(directory)
    ours = load_hf(directory).eval()
    ids = torch.randint(0, 1024, (1, 16))

    def run() -> object:
        return ours.generate(ids, max_new_tokens=32, cache="static", compile=True)

    run()
    return run, torch.no_grad()(lambda: hf.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False))


def warm_load(directory: str) -> tuple[Fn, Fn]:
    """A warm (files cached) ``load_hf`` vs transformers' ``from_pretrained`` of the same checkpoint."""
    _tiny_lm(directory)
    return lambda: load_hf(directory), lambda: transformers.Qwen3ForCausalLM.from_pretrained(directory)


def moe_vs_dense() -> tuple[Fn, Fn]:
    """MoE layer (16 experts x 128, top-4) fwd + bwd vs a dense SwiGLU of the active width, 256 tokens."""
    from omnikit.layers import SwiGLU
    from omnikit.moe import MoE, MoEConfig

    moe, dense = MoE(MoEConfig(dim=128, num_experts=16, top_k=4, expert_hidden=128)), SwiGLU(128, 4 * 128)
    x = torch.randn(256, 128, requires_grad=True)
    return lambda: moe(x).sum().backward(), lambda: dense(x).sum().backward()


def moe_vs_transformers() -> tuple[Fn, Fn]:
    """MoE layer (16 experts x 256, top-4, dim 512: 128 rows per expert, where the expert products run on
    oneDNN) fwd + bwd vs transformers' Qwen3-MoE sparse block with the same weights, 512 tokens."""
    import argparse

    from bench_moe import build

    models = build(argparse.Namespace(dim=512, experts=16, top_k=4, hidden=256, layouts=[], onednn_variants=False))
    x = torch.randn(1, 512, 512, requires_grad=True)
    ours, hf = models["omnikit MoE"], models["transformers grouped_mm"]
    return lambda: ours(x).sum().backward(), lambda: hf(x).sum().backward()


def rvq() -> tuple[Fn, Fn]:
    """ResidualVQ training step (dim 64, 4 x 256, 4 x 200 frames) vs vector-quantize-pytorch."""
    import vector_quantize_pytorch

    theirs = vector_quantize_pytorch.ResidualVQ(dim=64, num_quantizers=4, codebook_size=256, kmeans_init=True,
                                                decay=0.99, threshold_ema_dead_code=2, commitment_weight=1.0).train()
    ours = omnikit.audio.ResidualVQ(64, 4, 256, decay=0.99, dead_threshold=2.0, commitment_weight=1.0).train()
    x = torch.randn(4, 200, 64, requires_grad=True)

    def step(model: torch.nn.Module) -> Fn:
        def run() -> None:
            quantized, _codes, loss = tuple(model(x))[:3]
            (quantized.square().mean() + loss.sum()).backward()
        return run

    return step(ours), step(theirs)


def video_sampling(directory: str) -> tuple[Fn, Fn]:
    """``load_video`` of 8 frames (pyav) vs decoding every frame of a 10 s synthetic clip."""
    from omnikit.video import load_video, open_video
    from omnikit.video.synthetic import write_synthetic_video

    path = str(Path(directory) / "clip.mp4")
    write_synthetic_video(path, num_frames=300, fps=30, size=(90, 160), gop=60, cuts=[90, 240], sample_rate=0)

    def full() -> None:
        with open_video(path, backend="pyav") as video:
            for _ in video.iter_frames():
                pass

    return lambda: load_video(path, num_frames=8, backend="pyav"), full


def streamed_first_chunk() -> tuple[Fn, Fn]:
    """``thinker_talker_tiny``: time to the first 2-frame audio chunk vs the whole 25-frame reply."""
    from omnikit.fusion.models import tiny_omni_prompt

    torch.manual_seed(0)
    model = omnikit.create_model("thinker_talker_tiny").eval()
    ids, media = tiny_omni_prompt(torch.Generator().manual_seed(0))

    def stream() -> object:
        return model.stream(ids, max_new_tokens=24, max_frames=25, chunk_frames=2, **media)

    return lambda: next(iter(stream())), lambda: list(stream())


CASES: dict[str, Callable[..., tuple[Fn, Fn]]] = {
    "qwen2.5-omni audio, short mixed clips / transformers": audio_short,
    "whisper encoder / transformers": whisper_encoder,
    "qwen3 decoder layer fwd+bwd / transformers": decoder_layer,
    "greedy decode eager / transformers generate": greedy_decode,
    "greedy decode static cache + compile / transformers generate": compiled_decode,
    "warm load_hf / transformers from_pretrained": warm_load,
    "MoE fwd+bwd / dense SwiGLU of the active width": moe_vs_dense,
    "MoE fwd+bwd, 16 x 256 experts / transformers Qwen3-MoE block": moe_vs_transformers,
    "ResidualVQ train step / vector-quantize-pytorch": rvq,
    "video sampling 8 frames / full decode": video_sampling,
    "streamed first chunk / whole reply": streamed_first_chunk,
}
NEEDS_DIRECTORY = {greedy_decode, compiled_decode, warm_load, video_sampling}


def measure(name: str, directory: str, repeats: int) -> tuple[float, float]:
    """``(ratio, A/A ratio)`` of one case: medians of interleaved rounds of ours, the reference, the reference again."""
    build = CASES[name]
    torch.manual_seed(0)
    ours, ref = build(directory) if build in NEEDS_DIRECTORY else build()
    samples = interleaved_samples({"ours": ours, "ref": ref, "ref again": ref}, repeats=repeats, warmup=1,
                                  clock=time.process_time)
    med = {key: statistics.median(values) for key, values in samples.items()}
    return med["ours"] / med["ref"], med["ref again"] / med["ref"]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per case")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the case names to run")
    parser.add_argument("--floor", type=float, default=0.05, help="smallest relative change reported as moved")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--record", action="store_true", help="store this run's ratios as the new baseline")
    parser.add_argument("--dry", action="store_true", help="build and call every case once; no timing, no comparison")
    args = parser.parse_args(argv)
    names = [n for n in CASES if args.only is None or any(s.lower() in n.lower() for s in args.only)]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            directory = str(Path(tmp) / str(i))
            Path(directory).mkdir()
            if args.dry:
                build = CASES[name]
                for fn in build(directory) if build in NEEDS_DIRECTORY else build():
                    fn()
                print(f"ok: {name}")
                continue
            ratio, aa = measure(name, directory, args.repeats)
            results[name] = {"ratio": ratio, "aa": aa}
            print(f"{name}: {ratio:.3f} (A/A {aa:.3f})", flush=True)
    if args.dry:
        return results
    noise = max(args.floor, 2 * max(abs(r["aa"] - 1) for r in results.values()))
    baseline = json.loads(args.baseline.read_text())["ratios"] if args.baseline.exists() else {}
    rows = []
    for name, r in results.items():
        before = baseline.get(name)
        change = r["ratio"] / before - 1 if before else None
        verdict = "new" if change is None else ("slower" if change > noise else "faster" if change < -noise else "-")
        rows.append([name, "-" if before is None else f"{before:.3f}", f"{r['ratio']:.3f}", f"{r['aa']:.3f}",
                     "-" if change is None else f"{change:+.1%}", verdict])
    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
          f"thread(s), {args.repeats} rounds, process CPU time; noise threshold {noise:.1%} "
          f"(2 x the largest A/A deviation, at least {args.floor:.0%})\n")
    print(format_table(["ratio (< 1: omnikit faster)", "baseline", "now", "A/A", "change", "moved"], rows))
    moved = [row[0] for row in rows if row[-1] in ("slower", "faster")]
    print("\nmoved beyond the noise: " + (", ".join(moved) if moved else "none"))
    if args.record:
        recorded = {**baseline, **{name: r["ratio"] for name, r in results.items()}}
        args.baseline.write_text(json.dumps({"date": str(date.today()), "threads": torch.get_num_threads(),
                                             "repeats": args.repeats, "ratios": recorded}, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
