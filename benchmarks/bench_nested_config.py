"""Eager paths of the models whose configs now nest a TransformerConfig, old revision vs this checkout.

Usage: python benchmarks/bench_nested_config.py --old-rev 0a9c852 [--repeats 11] [--threads 1]

Each workload is built by both revisions from the same seed (the old one imported as ``omnikit_old``,
see ``bench_before_after.py``) and run in interleaved rounds; the configs' flat keywords are read
through properties now (``config.dim`` -> ``config.transformer.dim``). Workloads: forward of the
Whisper, Qwen2.5-Omni (windowed) and Qwen3-Omni (AuT) audio towers, the window-attention ViT and the
Q-Former at their tiny sizes on their contract inputs, Mimi's encode + decode streamed frame by
frame (the path that reads its config per step) and Code2Wav's forward. The table gives median
times and the median per-round ratio ``old / new`` (> 1: faster now).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from bench_before_after import compare

import omnikit

FORWARD = ("whisper_encoder_tiny", "qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny", "qwen2_5_omni_vision_tiny",
           "qformer_tiny", "code2wav_tiny")


def forward(name: str) -> Callable[[ModuleType], Callable[[], object]]:
    def make(package: ModuleType) -> Callable[[], object]:
        torch.manual_seed(0)
        model = package.create_model(name).eval()
        kwargs = omnikit.create_model(name).contract_inputs([48, 40], seed=1).kwargs

        @torch.no_grad()
        def step() -> object:
            return model(**kwargs)

        return step

    return make


def mimi_stream(package: ModuleType) -> Callable[[], object]:
    torch.manual_seed(0)
    mimi = package.create_model("mimi_tiny").eval()
    hop = mimi.config.sample_rate // int(mimi.config.frame_rate)
    wav = torch.randn(1, 1, hop * 24, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def step() -> object:
        with mimi.streaming(1):
            codes = [mimi.encode(chunk) for chunk in wav.split(hop, dim=-1)]
            return [mimi.decode(c) for c in codes]

    return step


def main() -> None:
    workloads = [(f"{name} forward", forward(name)) for name in FORWARD]
    compare(__doc__.splitlines()[0], [*workloads, ("mimi_tiny streamed encode + decode, 24 frames", mimi_stream)], 2)


if __name__ == "__main__":
    main()
