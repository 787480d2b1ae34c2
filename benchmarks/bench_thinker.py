"""Thinker train step vs transformers' Qwen2.5-Omni Thinker at the same size; Thinker-Talker streaming latency.

Usage: python benchmarks/bench_thinker.py [--dim 256] [--depth 4] [--tokens 512] [--repeats 5]

1. Train-step throughput (forward + backward + AdamW step) of an omnikit :class:`Thinker` and of
   ``Qwen2_5OmniThinkerForConditionalGeneration`` with the same text decoder shape (GQA, qkv bias,
   M-RoPE 3-D positions), on the same token batch in one process, timed round-robin.
2. Time to the first audio chunk vs total generation time of ``thinker_talker_tiny`` streaming.
"""

from __future__ import annotations

import argparse

import torch
from common import format_table, interleaved_medians

import omnikit
from omnikit.fusion import Thinker
from omnikit.layers import DecoderConfig


def build_pair(dim: int, depth: int, heads: int, kv_heads: int, ffn: int, vocab: int):
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as c
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    head_dim = dim // heads
    sections = (head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16)
    config = c.Qwen2_5OmniThinkerConfig(
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          output_dim=dim, num_mel_bins=16),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=dim,
                           fullatt_block_indexes=[0]),
        text_config=dict(hidden_size=dim, intermediate_size=ffn, num_hidden_layers=depth, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=False,
                         rope_scaling=dict(type="default", mrope_section=list(sections))),
    )
    config._attn_implementation = "sdpa"
    hf = m.Qwen2_5OmniThinkerForConditionalGeneration(config).train()
    ours = Thinker(DecoderConfig(
        dim=dim, depth=depth, num_heads=heads, num_kv_heads=kv_heads, mlp_hidden=ffn, vocab_size=vocab,
        qkv_bias=True, qk_norm=False, norm_eps=1e-6, rope_base=1_000_000.0, mrope_sections=sections,
    )).train()
    return hf, ours


def train_step_table(args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    hf, ours = build_pair(args.dim, args.depth, args.heads, args.kv_heads, args.ffn, args.vocab)
    ids = torch.randint(0, args.vocab, (args.batch, args.tokens))
    positions = torch.arange(args.tokens).expand(3, args.batch, -1)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)

    def hf_step() -> None:
        logits = hf(input_ids=ids, position_ids=positions, use_cache=False).logits
        loss_fn(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    def ours_step() -> None:
        logits = ours(ids, positions=positions)
        loss_fn(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    times = interleaved_medians({"hf": hf_step, "ours": ours_step}, repeats=args.repeats, warmup=2)
    tokens = args.batch * args.tokens
    row = [f"dim {args.dim}, {args.depth} layers, {args.batch}x{args.tokens} tokens",
           f"{tokens / times['hf']:.0f}", f"{tokens / times['ours']:.0f}", f"{times['hf'] / times['ours']:.2f}"]
    return format_table(["Thinker train step (fwd+bwd+AdamW, fp32, CPU)", "transformers (tok/s)",
                         "omnikit (tok/s)", "speed-up"], [row])


def latency_table(args: argparse.Namespace) -> str:
    from omnikit.fusion.models import tiny_omni_prompt

    torch.manual_seed(0)
    model = omnikit.create_model("thinker_talker_tiny").eval()
    ids, media = tiny_omni_prompt(torch.Generator().manual_seed(0))
    rows = []
    for chunk_frames in (2, 5, 10):
        firsts, totals = [], []
        for _ in range(args.repeats):
            chunks = list(model.stream(ids, max_new_tokens=24, max_frames=50, chunk_frames=chunk_frames, **media))
            firsts.append(chunks[0].elapsed)
            totals.append(chunks[-1].elapsed)
        first, total = sorted(firsts)[len(firsts) // 2], sorted(totals)[len(totals) // 2]
        rows.append([chunk_frames, f"{first * 1000:.0f}", f"{total * 1000:.0f}", f"{first / total:.2f}"])
    return format_table(["chunk (frames of 20 ms)", "first audio chunk (ms)", "total, 50 frames + 24 tokens (ms)",
                         "first / total"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(train_step_table(args))
    print()
    print(latency_table(args))


if __name__ == "__main__":
    main()
