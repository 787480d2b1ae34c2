"""Fuzz cases for issue 28: the silent and obscure inputs found by trying the library as a new user would.

Imported by ``benchmarks/fuzz_entry_points.py`` (family ``round3``); each case names the argument its
error must name, or ``None`` for an input that must work and give finite outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import omnikit


def _saved_decoder() -> Path:
    directory = Path(tempfile.mkdtemp())
    omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), directory)
    return directory


def _nan_model_load() -> Any:
    model = omnikit.create_model("decoder_tiny")
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    directory = Path(tempfile.mkdtemp())
    omnikit.save_pretrained(model, directory)
    return omnikit.load_pretrained(directory)


def _escaping_link() -> Any:
    source = _saved_decoder()
    linked = Path(tempfile.mkdtemp())
    for name in ("model.safetensors", "config.json"):
        os.symlink(source / name, linked / name)
    return omnikit.load_pretrained(linked)


def _hub_int32_embedding() -> Any:
    from safetensors.torch import load_file, save_file

    from omnikit.convert import load_hf, save_hf

    directory = Path(tempfile.mkdtemp())
    save_hf(omnikit.create_model("decoder_tiny"), directory)  # a Qwen3 layout
    files = sorted(directory.glob("*.safetensors"))
    for file in files:
        state = load_file(str(file))
        if "model.embed_tokens.weight" in state:
            state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"].to(torch.int32)
            save_file(state, str(file), metadata={"format": "pt"})
    return load_hf(directory)


def _video(strategy: str, **kwargs: Any) -> Callable[[], Any]:
    def call() -> Any:
        from omnikit.video import load_video
        from omnikit.video.synthetic import write_synthetic_video

        path = write_synthetic_video(Path(tempfile.mkdtemp()) / "a.mp4", num_frames=12, fps=12, size=(32, 48)).path
        return load_video(path, strategy=strategy, **kwargs)

    return call


def _frames(name: str) -> torch.Tensor:
    return omnikit.create_model(name).contract_inputs([2]).kwargs["frames"]


def round3_cases() -> list:
    from fuzz_entry_points import Case, model

    from omnikit.audio.features import log_mel_spectrogram
    from omnikit.fusion import QWEN2_5_OMNI, MediaTokens, VisualGrid, tmrope_position_ids
    from omnikit.fusion.tmrope import TMRoPEScheme

    audio = lambda: model("qwen2_5_omni_audio_tiny")
    windowed = lambda n: audio()(torch.randn(1, audio().config.n_mels, n))
    mel = lambda a: log_mel_spectrogram(torch.randn(1, 16000) * a, sample_rate=16000)
    moe = lambda x: model("moe_tiny")(x, return_aux=True)
    dim = lambda: model("moe_tiny").config.dim
    nan_token = lambda: torch.randn(1, 4, dim()).index_fill_(1, torch.tensor([2]), float("nan"))
    audio_ids = torch.tensor([[1, 7, 7, 2]])
    lm = lambda: model("decoder_tiny")
    prompt = torch.ones(1, 3, dtype=torch.long)
    return [
        Case("round3", "load_hf: int32 embedding", _hub_int32_embedding, "model.embed_tokens.weight"),
        Case("round3", "windowed audio: 1 frame", lambda: windowed(1), "features"),
        Case("round3", "windowed audio: 2 frames", lambda: windowed(2), "features"),
        Case("round3", "windowed audio: 3 frames", lambda: windowed(3), None),
        Case("round3", "log_mel: amplitude 1e18", lambda: mel(1e18), None),
        Case("round3", "log_mel: amplitude 1e30", lambda: mel(1e30), None),
        Case("round3", "load_video scene fps=-1", _video("scene", fps=-1), "fps"),
        Case("round3", "load_video size 100000^2", _video("uniform", num_frames=2, size=(100000, 100000)), "size"),
        Case("round3", "frame encoder: 0-255 floats", lambda: model("frame_encoder_tiny")(
            (_frames("frame_encoder_tiny").clamp(-1, 1) + 1) * 127.5), "frames"),
        Case("round3", "video vit: zero frames", lambda: model("video_vit_tiny")(
            _frames("video_vit_tiny")[:, :0]), "frames"),
        Case("round3", "moe: a NaN token", lambda: moe(nan_token()), "x"),
        Case("round3", "moe: all NaN", lambda: moe(torch.full((1, 4, dim()), float("nan"))), "x"),
        Case("round3", "tmrope: seconds_per_step -1", lambda: VisualGrid(2, 2, 2, seconds_per_step=-1.0),
             "VisualGrid.seconds_per_step"),
        Case("round3", "tmrope: ids_per_second -25", lambda: TMRoPEScheme(ids_per_second=-25.0),
             "TMRoPEScheme.ids_per_second"),
        Case("round3", "tmrope: seconds_per_chunk 0", lambda: TMRoPEScheme(seconds_per_chunk=0.0),
             "TMRoPEScheme.seconds_per_chunk"),
        Case("round3", "tmrope: audio length 2.5", lambda: tmrope_position_ids(
            audio_ids, MediaTokens(audio=7), audios=[2.5], scheme=QWEN2_5_OMNI), "audios"),
        Case("round3", "tmrope: audios=[-2]", lambda: tmrope_position_ids(
            audio_ids, MediaTokens(audio=7), audios=[-2], scheme=QWEN2_5_OMNI), "audios"),
        Case("round3", "checkpoint: link escaping its folder", _escaping_link, "model.safetensors"),
        Case("round3", "checkpoint: NaN weights", _nan_model_load, "embed.weight"),
        Case("round3", "create_model(123)", lambda: omnikit.create_model(123), "name"),
        Case("round3", "create_model mlp='bogus'", lambda: omnikit.create_model("decoder_tiny", mlp="bogus"), "mlp"),
        Case("round3", "generate: empty prompt", lambda: lm().generate(
            torch.zeros(2, 0, dtype=torch.long), max_new_tokens=2), "input_ids"),
        Case("round3", "generate: temperature without do_sample", lambda: lm().generate(
            prompt, max_new_tokens=2, temperature=0.7), "temperature"),
        Case("round3", "generate: do_sample + top_p", lambda: lm().generate(
            prompt, max_new_tokens=2, do_sample=True, top_p=0.9), None),
    ]

