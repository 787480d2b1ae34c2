"""omnikit vs transformers audio encoders: forward time, same weights, same batch (CPU, float32).

Run: ``python benchmarks/bench_audio_encoders.py [--repeats 5]``. Prints a markdown table of median
times and the ratio transformers / omnikit (> 1: omnikit is faster).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import transformers
from common import speedup_table
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as q25
from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as c3
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as q3
from transformers.models.whisper import modeling_whisper as w

from omnikit.convert import from_transformers

TOWER = dict(d_model=512, encoder_layers=4, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=128)
CLIP_SECONDS = (30.0, 12.34, 4.56, 21.7)  # one batch of clips of very different lengths


def padded_and_packed(n_mels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([int(s * 100) for s in CLIP_SECONDS])
    x = torch.randn(len(lengths), n_mels, int(lengths.max()))
    packed = torch.cat([x[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    return x, lengths, packed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        hf = w.WhisperEncoder(transformers.WhisperConfig(**TOWER)).eval()
        ours = from_transformers(hf).eval()
        x = torch.randn(4, 128, 3000)
        rows.append(("Whisper encoder, 4 x 30 s", partial(hf, x), partial(ours, x)))

        hf = q25.Qwen2_5OmniAudioEncoder(transformers.Qwen2_5OmniAudioEncoderConfig(**TOWER, output_dim=1024)).eval()
        ours = from_transformers(hf).eval()
        x, lengths, packed = padded_and_packed(128)
        clips = "/".join(f"{s:g}" for s in CLIP_SECONDS)
        rows.append((f"Qwen2.5-Omni windowed encoder, clips of {clips} s", partial(hf, packed, feature_lens=lengths),
                     partial(ours, x, lengths)))

        config = c3.Qwen3OmniMoeAudioEncoderConfig(**TOWER, output_dim=1024, downsample_hidden_size=128)
        hf = q3.Qwen3OmniMoeAudioEncoder(config).eval()
        ours = from_transformers(hf).eval()
        rows.append(("Qwen3-Omni AuT encoder, same clips", partial(hf, packed, feature_lens=lengths),
                     partial(ours, x, lengths)))
        table = speedup_table(rows, "encoder (fwd, fp32, CPU)", repeats=args.repeats)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"towers: {TOWER}\n")
    print(table)


if __name__ == "__main__":
    main()
