"""Gemma 4 forward + backward: omnikit vs transformers on the same weights, in one process.

Usage: python benchmarks/bench_gemma4.py [--tokens 256] [--batch 2] [--seconds 4] [--repeats 5]

Each transformers model is built from a small but real config (E2B-style text model with per-layer
embeddings and KV sharing; 26B-style MoE text model with K = V global layers; the conformer audio
tower), saved, and loaded with ``omnikit.convert.load_hf``, so both sides hold the same weights. A
step is ``forward -> mean of squares -> backward`` (no optimizer), timed round-robin; the table
gives the median seconds and transformers / omnikit (above 1: omnikit is faster).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import format_table, interleaved_medians

from omnikit.convert import load_hf

S, F = "sliding_attention", "full_attention"
TEXT = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2,
            head_dim=64, global_head_dim=128, sliding_window=128, final_logit_softcapping=30.0)
CONFIGS = {
    "text E2B-style (6 layers, PLE, KV sharing)": dict(
        num_hidden_layers=6, layer_types=[S, S, F, S, S, F], num_kv_shared_layers=2, use_double_wide_mlp=True,
        hidden_size_per_layer_input=64, vocab_size_per_layer_input=4096),
    "text MoE-style (6 layers, 16 experts top-4)": dict(
        num_hidden_layers=6, layer_types=[S, S, F, S, S, F], attention_k_eq_v=True, num_global_key_value_heads=1,
        hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=16, top_k_experts=4,
        moe_intermediate_size=256),
}
AUDIO = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, subsampling_conv_channels=[128, 32],
             output_proj_dims=256)


def _text_pair(extra: dict, directory: str):
    import transformers

    config = transformers.Gemma4TextConfig(**TEXT, **extra)
    config._attn_implementation = "sdpa"
    if extra.get("enable_moe_block"):
        config._experts_implementation = "grouped_mm"
    hf = transformers.Gemma4ForCausalLM(config)
    hf.save_pretrained(directory)
    return hf.train(), load_hf(directory).train()


def _audio_pair(directory: str):
    import transformers

    config = transformers.Gemma4Config(text_config=dict(TEXT, num_hidden_layers=1, layer_types=[F]),
                                       audio_config=AUDIO, vision_config=None)
    hf = transformers.Gemma4ForConditionalGeneration(config)
    hf.save_pretrained(directory)
    return hf.model.train(), load_hf(directory, part="audio_encoder").train()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    ids = torch.randint(0, TEXT["vocab_size"], (args.batch, args.tokens))
    for label, extra in CONFIGS.items():
        with tempfile.TemporaryDirectory() as directory:
            hf, ours = _text_pair(extra, directory)
        fns = {
            "transformers": lambda hf=hf: hf(input_ids=ids, use_cache=False).logits.square().mean().backward(),
            "omnikit": lambda ours=ours: ours(ids).square().mean().backward(),
        }
        rows.append((label, fns))
    frames = int(args.seconds * 100)
    features = torch.randn(args.batch, frames, 128)
    mask = torch.ones(args.batch, frames, dtype=torch.bool)
    with tempfile.TemporaryDirectory() as directory:
        hf_audio, tower = _audio_pair(directory)
    rows.append((f"audio tower (4 blocks, {args.seconds:g} s)", {
        "transformers": lambda: hf_audio.get_audio_features(features, mask).pooler_output.square().mean().backward(),
        "omnikit": lambda: tower(features.transpose(1, 2)).hidden_states.square().mean().backward(),
    }))
    table = []
    for label, fns in rows:
        times = interleaved_medians(fns, repeats=args.repeats, warmup=1)
        table.append((label, f"{times['transformers'] * 1e3:.1f}", f"{times['omnikit'] * 1e3:.1f}",
                      f"{times['transformers'] / times['omnikit']:.2f}x"))
    print(f"batch {args.batch}, {args.tokens} tokens; threads {torch.get_num_threads()}")
    print(format_table(("fwd+bwd", "transformers ms", "omnikit ms", "transformers / omnikit"), table))


if __name__ == "__main__":
    main()
