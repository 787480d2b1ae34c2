"""omnikit vs transformers: DAC encode / decode and wav2vec 2.0 encoder forward, same weights, same batch
(CPU, float32, inference mode).

Run: ``python benchmarks/bench_dac_wav2vec2.py [--repeats 5]``. The models are "tiny but real": the
published strides, kernels and codebook layout at reduced widths / depths, saved by transformers and
loaded with ``omnikit.convert.load_hf``. Prints a markdown table of median times and the ratio
transformers / omnikit (> 1: omnikit is faster) and checks the outputs agree.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial

import torch
import transformers
from common import speedup_table

from omnikit.convert import load_hf

DAC = dict(encoder_hidden_size=16, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=256, n_codebooks=12,
           codebook_size=1024, codebook_dim=8, sampling_rate=16000)
W2V = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
LARGE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)


def loaded(hf: torch.nn.Module) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        return load_hf(tmp)


def report(repeats: int) -> str:
    """The header and the table: every row's outputs are checked to agree before it is timed."""
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        hf = transformers.DacModel(transformers.DacConfig(**DAC)).eval()
        ours = loaded(hf)
        wav = torch.randn(2, 1, 16000)
        codes = hf.encode(wav).audio_codes
        assert torch.equal(ours.encode(wav), codes)
        rows.append(("DAC encode, 2 x 1 s at 16 kHz", partial(hf.encode, wav), partial(ours.encode, wav)))
        rows.append(("DAC decode, same codes", partial(hf.decode, audio_codes=codes), partial(ours.decode, codes)))
        wav = torch.randn(4, 32000)
        for name, layout in (("base layout (group norm, post-LN)", {}), ("large layout (layer norm, pre-LN)", LARGE)):
            hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**W2V, **layout)).eval()
            ours = loaded(hf)
            torch.testing.assert_close(ours(wav).hidden_states, hf(wav).last_hidden_state, rtol=1e-4, atol=1e-4)
            rows.append((f"wav2vec 2.0 {name}, 4 x 2 s", partial(hf, wav), partial(ours, wav)))
        table = speedup_table(rows, "model (fp32, CPU)", repeats=repeats)
    return (f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}\n"
            f"DAC {DAC}\nwav2vec 2.0 {W2V}\n\n{table}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="DAC and wav2vec 2.0: omnikit vs transformers")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (medians)")
    print(report(parser.parse_args().repeats))
