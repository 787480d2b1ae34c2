"""Qwen3.5 vision-language model vs transformers: prefill and a train step on an image + video prompt.

Usage: python benchmarks/bench_qwen3_5_vl.py [--dim 256] [--depth 4] [--batch 2] [--text 128] [--repeats 3]

A tiny-but-real ``Qwen3_5ForConditionalGeneration`` (hybrid text model of ``dim`` x ``depth``: Gated DeltaNet
3:1 with gated full attention, interleaved M-RoPE on a quarter of each head; a 2-block vision tower merging to
``dim``) is built in transformers, saved and loaded with ``omnikit.convert.load_hf``; both run the same
processor-style batch (each row: text, a 224 x 224 image, text, a 4-frame 224 x 224 clip written step by step
after timestamp ids, text) in one process, timed round-robin: the no-grad forward (prefill) and forward +
backward. Both use their pure-torch paths (no flash-linear-attention on the CPU).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import speedup_table

from omnikit.convert import hf_inputs, load_hf
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts

IMAGE, VIDEO, V_START, V_END = 250, 251, 252, 253


def build(args: argparse.Namespace):
    import transformers

    heads = args.dim // 64
    text = dict(vocab_size=256, hidden_size=args.dim, intermediate_size=3 * args.dim, num_hidden_layers=args.depth,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=64,
                linear_num_key_heads=heads, linear_num_value_heads=2 * heads, linear_key_head_dim=64,
                linear_value_head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 1e7,
                                                           "partial_rotary_factor": 0.25, "mrope_section": [3, 3, 2],
                                                           "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=args.dim,
                  patch_size=16, num_position_embeddings=256)
    config = transformers.Qwen3_5Config(text_config=text, vision_config=vision, image_token_id=IMAGE,
                                        video_token_id=VIDEO, vision_start_token_id=V_START, vision_end_token_id=V_END)
    torch.manual_seed(0)
    hf = transformers.Qwen3_5ForConditionalGeneration(config)
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        ours = load_hf(directory)
    return hf, ours


def batch(model, args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(1)
    prompts = [OmniPrompt(model, generator=g).text(args.text // 2).image(224, 224).text(args.text // 4)
               .video(4, 224, 224, step_text=3).text(args.text // 4) for _ in range(args.batch)]
    inputs = collate_prompts(prompts)
    ids = inputs["input_ids"]
    inputs["mm_token_type_ids"] = (ids == IMAGE).long() + 2 * (ids == VIDEO).long()
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf, ours = build(args)
    inputs = batch(ours, args)
    kwargs = hf_inputs(ours, inputs)
    visual = int(((inputs["input_ids"] == IMAGE) | (inputs["input_ids"] == VIDEO)).sum()) // args.batch
    print(f"batch {args.batch} x {inputs['input_ids'].shape[1]} tokens ({visual} visual tokens per row), "
          f"dim {args.dim}, depth {args.depth}\n")

    def prefill(model, call):
        model.eval()
        with torch.no_grad():
            call()

    def train(model, call):
        model.train()
        call().sum().backward()
        model.zero_grad(set_to_none=True)

    rows = [
        ("prefill (no grad)", lambda: prefill(hf, lambda: hf(**inputs).logits),
         lambda: prefill(ours, lambda: ours(**kwargs))),
        ("forward + backward", lambda: train(hf, lambda: hf(**inputs).logits),
         lambda: train(ours, lambda: ours(**kwargs))),
    ]
    print(speedup_table(rows, "Qwen3.5 VL", repeats=args.repeats))


if __name__ == "__main__":
    main()
