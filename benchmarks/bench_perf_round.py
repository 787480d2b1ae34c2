"""Issue 30, second round: omnikit at an earlier revision and now, each against transformers, in one process.

Usage (one thread; process CPU time, because on the shared 2-core machine wall time mostly measures waiting)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_perf_round.py --old-rev 0a9c852 [--repeats 9] [--only decode]

Every round times the old omnikit, the new omnikit, transformers and transformers again (the A/A
call: the run's own noise), in that order; times are medians of the rounds, ratios the medians of
the per-round ratios (which a load that drifts between rounds disturbs least). Workloads, all
float32 on the CPU: eager greedy decoding (32 new tokens after 16) of a Qwen3 LM loaded with
``load_hf`` from the transformers model's own checkpoint (the regression guard's width 128 x 4
layers, and width 512 x 4 layers), a Qwen3 decoder layer forward + backward (width 256, 256
tokens: the guard's), and the Whisper encoder (2 layers x 256, two 10 s clips: the guard's).
Ratios are omnikit / transformers (< 1: omnikit faster). Then ``thinker_talker_tiny``'s streamed speech
(replies of 25 and 50 code frames, 2-frame chunks; ``--only chunk`` for this table alone): time to the first
chunk and to the end, and the prompt's fixed work (fusing the media, the Thinker's prefill to its first
token), with the first chunk's share of the reply both as it is and with that fixed work left out.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import transformers
from bench_before_after import import_old
from common import format_table, interleaved_samples

import omnikit

Fn = Callable[[], object]


def greedy_decode(dim: int, directory: str) -> tuple[Callable[[ModuleType], Fn], Fn]:
    config = transformers.Qwen3Config(hidden_size=dim, intermediate_size=dim * 11 // 4, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=dim // 4,
                                      vocab_size=1024 if dim <= 128 else 8192)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(config).eval()
    hf.save_pretrained(directory)
    ids = torch.randint(0, config.vocab_size, (1, 16))
    theirs = torch.no_grad()(lambda: hf.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False))

    def ours(lib: ModuleType) -> Fn:
        lm = importlib.import_module(f"{lib.__name__}.convert").load_hf(directory).eval()
        if not torch.equal(lm.generate(ids, max_new_tokens=32).tokens, theirs()[:, 16:]):
            raise AssertionError("greedy tokens differ from transformers'")
        return lambda: lm.generate(ids, max_new_tokens=32)

    return ours, theirs


def decoder_layer() -> tuple[Callable[[ModuleType], Fn], Fn]:
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

    config = transformers.Qwen3Config(hidden_size=256, intermediate_size=704, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=64, attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = Qwen3DecoderLayer(config, 0)
    x = torch.randn(1, 256, 256, requires_grad=True)
    rope = Qwen3RotaryEmbedding(config)(x, torch.arange(256)[None])

    def ours(lib: ModuleType) -> Fn:
        layer = importlib.import_module(f"{lib.__name__}.convert").from_transformers(hf)
        return lambda: layer(x).sum().backward()

    return ours, lambda: hf(x, attention_mask=None, position_embeddings=rope).sum().backward()


def whisper_encoder() -> tuple[Callable[[ModuleType], Fn], Fn]:
    from transformers.models.whisper import modeling_whisper as w

    config = transformers.WhisperConfig(d_model=256, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=1024,
                                        num_mel_bins=80, max_source_positions=500)
    torch.manual_seed(0)
    hf = w.WhisperEncoder(config).eval()
    x = torch.randn(2, 80, 1000)

    def ours(lib: ModuleType) -> Fn:
        encoder = importlib.import_module(f"{lib.__name__}.convert").from_transformers(hf).eval()
        return torch.no_grad()(lambda: encoder(x))

    return ours, torch.no_grad()(lambda: hf(x))


def first_chunk(frames: int, libs: dict[str, ModuleType], repeats: int) -> dict[str, tuple[float, float, float]]:
    """``thinker_talker_tiny`` of each library in ``libs`` (same weights) streaming a reply of ``frames`` code
    frames in 2-frame chunks, in interleaved rounds: median ms to the first chunk, to the end, and of the
    prompt's fixed work (fusing the media and the Thinker's prefill up to its first token)."""
    fns = {}
    for name, lib in libs.items():
        models = importlib.import_module(f"{lib.__name__}.fusion.models")
        torch.manual_seed(0)
        model = lib.create_model("thinker_talker_tiny").eval()
        ids, media = models.tiny_omni_prompt(torch.Generator().manual_seed(0))

        def stream(model=model, ids=ids, media=media) -> object:
            return model.stream(ids, max_new_tokens=48, max_frames=frames, chunk_frames=2, **media)

        @torch.no_grad()
        def fixed(model=model, ids=ids, media=media) -> object:
            steps = model.omni.stream_generate(ids, fused=model.omni.fuse(ids, **media), max_new_tokens=48)
            return next(steps)

        fns[f"{name} first"] = lambda stream=stream: next(iter(stream()))
        fns[f"{name} all"] = lambda stream=stream: list(stream())
        fns[f"{name} fixed"] = fixed
    samples = interleaved_samples(fns, repeats=repeats, warmup=1, clock=time.process_time)
    return {name: tuple(statistics.median(samples[f"{name} {part}"]) * 1e3 for part in ("first", "all", "fixed"))
            for name in libs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", required=True)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default="", help="workloads whose name holds this text (\"chunk\": the chunk table)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old_rev, Path(tmp))
        cases = {
            "greedy decode eager, Qwen3 LM 128 x 4 layers": lambda: greedy_decode(128, str(Path(tmp) / "lm128")),
            "greedy decode eager, Qwen3 LM 512 x 4 layers": lambda: greedy_decode(512, str(Path(tmp) / "lm512")),
            "Qwen3 decoder layer fwd+bwd, 256 x 256 tokens": decoder_layer,
            "Whisper encoder fwd, 2 x 256, 2 x 10 s": whisper_encoder,
        }
        for label, build in cases.items():
            if args.only.lower() not in label.lower():
                continue
            ours, theirs = build()
            fns = {"old": ours(old), "new": ours(omnikit), "hf": theirs, "hf again": theirs}
            samples = interleaved_samples(fns, repeats=args.repeats, warmup=1, clock=time.process_time)
            med = {k: statistics.median(v) for k, v in samples.items()}
            ratio = {k: statistics.median(a / b for a, b in zip(samples[k], samples["hf"], strict=True))
                     for k in ("old", "new", "hf again")}
            rows.append([label, f"{med['hf'] * 1e3:.1f}", f"{med['old'] * 1e3:.1f}", f"{med['new'] * 1e3:.1f}",
                         f"{ratio['old']:.3f}", f"{ratio['new']:.3f}", f"{ratio['hf again']:.3f}"])
            print(" | ".join(rows[-1]), flush=True)
        chunk_rows = []
        for frames in (25, 50) if not args.only or "chunk" in args.only else ():
            for name, (first, total, fixed) in first_chunk(frames, {"old": old, "new": omnikit}, args.repeats).items():
                chunk_rows.append([str(frames), name, f"{first:.1f}", f"{total:.1f}", f"{first / total:.3f}",
                                   f"{fixed:.1f}", f"{(first - fixed) / (total - fixed):.3f}"])
    print(f"\nold: {args.old_rev}; new: this checkout; {torch.get_num_threads()} thread(s), {args.repeats} rounds, "
          "process CPU time\n")
    print(format_table(["workload", "transformers (ms)", "old (ms)", "new (ms)", "old / hf", "new / hf", "A/A"], rows))
    if chunk_rows:
        print(f"\nthinker_talker_tiny, 2-frame chunks ({args.repeats} interleaved rounds); fixed: fusing the media and"
              " the Thinker's prefill to its first token\n")
        print(format_table(["reply (frames)", "omnikit", "first audio (ms)", "total (ms)", "first / total",
                            "fixed (ms)", "first / total without fixed"], chunk_rows))

if __name__ == "__main__":
    main()
