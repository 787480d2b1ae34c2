"""Fuzz the public entry points with bad and edge inputs and classify what each one does.

Usage: python benchmarks/fuzz_entry_points.py [--family audio] [--details]

Every case calls one public entry point as a user who makes mistakes would. Outcomes:

- ``works``: an edge input that must work (one frame, an empty batch ...) ran and gave finite outputs;
- ``clear``: ``ValueError``/``TypeError`` (or ``KeyError`` / ``FileNotFoundError`` where the API
  promises them) whose message names the argument;
- ``obscure``: any other exception, or a message that does not name the argument;
- ``silent``: a bad input that ran without an error, or an output holding NaN/inf;
- ``blow-up``: the process peak memory grew by more than ``--memory-mb`` during the case.

Prints a markdown table of counts per family and outcome (``--details``: one row per case).
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

import omnikit

OUTCOMES = ("works", "clear", "obscure", "silent", "blow-up")
CLEAR_TYPES = (ValueError, TypeError, KeyError, FileNotFoundError)


@dataclass
class Case:
    family: str
    label: str
    call: Callable[[], Any]
    arg: str | None  # the argument the error must name; None: a valid edge input that must work
    may_refuse: bool = False  # an edge input for which a clear error is as good as working


@cache
def model(name: str, **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name, **overrides).eval()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [] if out.device.type == "meta" else [out]
    if isinstance(out, torch.nn.Module):
        return []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    if hasattr(out, "__dict__"):
        return [t for o in vars(out).values() for t in _tensors(o)]
    return []


def _names(message: str, arg: str) -> bool:
    """The message names ``arg``: quoted as an argument, or (file and key names) anywhere."""
    quoted = (f"`{arg}`", f"'{arg}'", f'"{arg}"')
    return any(q in message for q in quoted) or (("." in arg or "_" in arg) and arg in message)


def classify(case: Case, memory_mb: float) -> tuple[str, str]:
    before = _peak_mb()
    try:
        with torch.no_grad():
            out = case.call()
            if hasattr(out, "__next__"):
                out = list(out)
    except MemoryError as exc:
        return "blow-up", f"MemoryError {exc}"
    except CLEAR_TYPES as exc:
        message = str(exc)
        if _peak_mb() - before > memory_mb:
            return "blow-up", f"{type(exc).__name__} after {_peak_mb() - before:.0f} MB: {message[:120]}"
        named = case.arg is not None and _names(message, case.arg)
        if case.arg is None:
            return ("clear" if case.may_refuse else "obscure"), f"{type(exc).__name__}: {message[:160]}"
        return ("clear" if named else "obscure"), f"{type(exc).__name__}: {message[:160]}"
    except Exception as exc:  # everything else is what we are hunting
        return "obscure", f"{type(exc).__name__}: {str(exc)[:160]}"
    if _peak_mb() - before > memory_mb:
        return "blow-up", f"peak memory +{_peak_mb() - before:.0f} MB"
    bad = [t for t in _tensors(out) if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if case.arg is not None:
        return "silent", f"no error for bad `{case.arg}`"
    if bad:
        return "silent", "output holds NaN/inf"
    return "works", ""


# --------------------------------------------------------------------------- cases
def _nan_like(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.full(shape, float("nan"))


def _encoder_cases(name: str) -> list[Case]:
    n_mels = model(name).config.n_mels

    def call(features: torch.Tensor, lengths: list | None = None) -> Callable[[], Any]:
        return lambda: model(name)(features, None if lengths is None else torch.tensor(lengths))

    feats = torch.randn(2, n_mels, 40)
    return [
        Case("audio", f"{name}: features 2-D", call(torch.randn(n_mels, 50)), "features"),
        Case("audio", f"{name}: wrong n_mels", call(torch.randn(1, n_mels + 1, 50)), "features"),
        Case("audio", f"{name}: int features", call(torch.ones(1, n_mels, 50, dtype=torch.long)), "features"),
        Case("audio", f"{name}: lengths too long", call(feats, [40, 41]), "lengths"),
        Case("audio", f"{name}: lengths zero", call(feats, [40, 0]), "lengths"),
        Case("audio", f"{name}: lengths float", call(feats, [40.0, 20.0]), "lengths"),
        Case("audio", f"{name}: lengths wrong batch", call(feats, [40]), "lengths"),
        Case("audio", f"{name}: zero frames", call(torch.randn(1, n_mels, 0)), "features"),
        Case("audio", f"{name}: empty batch", call(torch.randn(0, n_mels, 40)), None, True),
        Case("audio", f"{name}: NaN features", call(_nan_like((1, n_mels, 40))), "features"),
        Case("audio", f"{name}: one frame", call(torch.randn(1, n_mels, 1)), None, True),
    ]


def audio_cases() -> list[Case]:
    import omnikit.audio.features

    cases = [c for name in ("whisper_encoder_tiny", "qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny")
             for c in _encoder_cases(name)]
    cases += [
        Case("audio", "log_mel: stereo 3-D", lambda: omnikit.audio.features.log_mel_spectrogram(
            torch.randn(1, 2, 1600), sample_rate=16000), "wav"),
        Case("audio", "log_mel: wrong rate", lambda: omnikit.audio.features.log_mel_spectrogram(
            torch.randn(1, 1600), sample_rate=8000), "sample_rate"),
        Case("audio", "log_mel: NaN wav", lambda: omnikit.audio.features.log_mel_spectrogram(
            _nan_like((1, 1600)), sample_rate=16000), "wav"),
        Case("audio", "log_mel: n_mels 0", lambda: omnikit.audio.features.log_mel_spectrogram(
            torch.randn(1, 1600), sample_rate=16000, n_mels=0), "n_mels"),
        Case("audio", "wav2vec: 2 channels", lambda: model("wav2vec2_feature_encoder_tiny")(torch.randn(1, 2, 800)),
             "features"),
        Case("audio", "wav2vec: shorter than its kernel", lambda: model("wav2vec2_feature_encoder_tiny")(
            torch.randn(1, 1, 3)), "features"),
    ]
    return cases


def codec_cases() -> list[Case]:
    codec = lambda: model("seanet_codec_tiny")
    k = lambda: codec().num_codebooks
    size = lambda: codec().codebook_size
    rvq = lambda: omnikit.audio.ResidualVQ(8, 2, 16).eval()
    return [
        Case("codec", "decode: code = codebook_size", lambda: codec().decode(
            torch.full((1, k(), 4), size())), "codes"),
        Case("codec", "decode: negative code", lambda: codec().decode(torch.full((1, k(), 4), -1)), "codes"),
        Case("codec", "decode: float codes", lambda: codec().decode(torch.zeros(1, k(), 4)), "codes"),
        Case("codec", "decode: wrong K", lambda: codec().decode(torch.zeros(1, k() + 1, 4, dtype=torch.long)),
             "codes"),
        Case("codec", "decode: zero frames", lambda: codec().decode(torch.zeros(1, k(), 0, dtype=torch.long)),
             None, True),
        Case("codec", "decode: empty batch", lambda: codec().decode(torch.zeros(0, k(), 3, dtype=torch.long)),
             None, True),
        Case("codec", "encode: NaN wav", lambda: codec().encode(_nan_like((1, 1, 64))), "wav"),
        Case("codec", "encode: 2 channels", lambda: codec().encode(torch.randn(1, 2, 64)), "wav"),
        Case("codec", "encode: shorter than a hop", lambda: codec().encode(torch.randn(1, 1, 3)), "wav", True),
        Case("codec", "forward: lengths > S", lambda: codec()(torch.randn(2, 1, 64), torch.tensor([64, 65])),
             "lengths"),
        Case("codec", "rvq: NaN input (train)", lambda: rvq().train()(_nan_like((1, 4, 8))), "x"),
        Case("codec", "rvq: wrong dim", lambda: rvq()(torch.randn(1, 4, 9)), "x"),
        Case("codec", "rvq: decode out of range", lambda: rvq().decode(torch.full((1, 2, 3), 16)), "codes"),
        Case("codec", "rvq: n_q too large", lambda: rvq()(torch.randn(1, 4, 8), n_q=3), "n_q"),
        Case("codec", "rvq: mask wrong shape", lambda: rvq()(torch.randn(1, 4, 8), torch.ones(1, 3, dtype=bool)),
             "mask"),
        Case("codec", "stream: decode batch mismatch", lambda: _codec_stream_mismatch(codec()), "codes"),
    ]


def _codec_stream_mismatch(codec: torch.nn.Module) -> Any:
    with codec.streaming(2):
        return codec.decode(torch.zeros(3, codec.num_codebooks, 1, dtype=torch.long))


def vision_cases() -> list[Case]:
    enc = lambda: model("frame_encoder_tiny")
    size = lambda: enc().input_size
    vit = lambda: model("video_vit_tiny")
    return [
        Case("vision", "frames 4-D", lambda: enc()(torch.randn(2, 3, *size())), "frames"),
        Case("vision", "1 channel", lambda: enc()(torch.randn(1, 2, 1, *size())), "frames"),
        Case("vision", "size not a patch multiple", lambda: enc()(torch.randn(1, 1, 3, size()[0] + 1, size()[1])),
             "frames"),
        Case("vision", "uint8 frames", lambda: enc()(torch.zeros(1, 1, 3, *size(), dtype=torch.uint8)), "frames"),
        Case("vision", "float64 frames", lambda: enc()(torch.randn(1, 1, 3, *size(), dtype=torch.float64)),
             "frames"),
        Case("vision", "lengths 0", lambda: enc()(torch.randn(2, 2, 3, *size()), torch.tensor([2, 0])), "lengths"),
        Case("vision", "empty batch", lambda: enc()(torch.randn(0, 2, 3, *size())), None, True),
        Case("vision", "zero frames", lambda: enc()(torch.randn(1, 0, 3, *size())), "frames", True),
        Case("vision", "NaN frames", lambda: enc()(_nan_like((1, 1, 3, *size()))), "frames"),
        Case("vision", "preprocess float", lambda: enc().preprocess(torch.rand(1, 3, 8, 8)), "frames"),
        Case("vision", "video_vit: wrong channels", lambda: vit()(**_vit_inputs(vit(), channels=1)), "frames"),
        Case("vision", "video_vit: size not a patch multiple", lambda: vit()(**_vit_inputs(vit(), extra=1)),
             "frames"),
        Case("vision", "video_vit: empty batch", lambda: vit()(**_vit_inputs(vit(), batch=0)), None, True),
        Case("vision", "timm name unknown", lambda: omnikit.vision.FrameEncoder("no_such_vit"), "backbone"),
    ]


def _vit_inputs(vit: torch.nn.Module, *, channels: int | None = None, extra: int = 0, batch: int = 1) -> dict:
    kwargs = dict(vit.contract_inputs([2]).kwargs)
    frames = kwargs["frames"]
    shape = list(frames.shape)
    shape[0] = batch
    if channels is not None:
        shape[2] = channels
    shape[-1] += extra
    kwargs["frames"] = torch.randn(shape)
    kwargs.pop("lengths", None)
    return kwargs


@cache
def synthetic_video(num_frames: int = 40) -> str:
    from omnikit.video.synthetic import write_synthetic_video

    directory = Path(tempfile.mkdtemp(prefix="omnikit_fuzz_"))
    return write_synthetic_video(directory / f"v{num_frames}.mp4", num_frames=num_frames, fps=25,
                                 size=(32, 48)).path


def video_cases() -> list[Case]:
    from omnikit.video import detect_scenes, load_video

    video = synthetic_video
    tokens = lambda name: model(name).contract_inputs([3, 2]).kwargs
    return [
        Case("video", "fps=5e6 on 40 frames", lambda: load_video(video(), fps=5e6, strategy="fps"), None),
        Case("video", "fps=1e8 on 40 frames", lambda: load_video(video(), fps=1e8, strategy="fps"), None),
        Case("video", "fps NaN", lambda: load_video(video(), fps=float("nan"), strategy="fps"), "fps"),
        Case("video", "fps 0", lambda: load_video(video(), fps=0.0, strategy="fps"), "fps"),
        Case("video", "num_frames > frames", lambda: load_video(video(), num_frames=1000), "num_frames"),
        Case("video", "num_frames 0", lambda: load_video(video(), num_frames=0), "num_frames"),
        Case("video", "num_frames float", lambda: load_video(video(), num_frames=2.5), "num_frames"),
        Case("video", "unknown strategy", lambda: load_video(video(), strategy="random"), "strategy"),
        Case("video", "size 0", lambda: load_video(video(), num_frames=2, size=0), "size"),
        Case("video", "missing file", lambda: load_video("/nonexistent.mp4"), "path"),
        Case("video", "not a video", lambda: load_video(__file__), "path"),
        Case("video", "one-frame video", lambda: load_video(video(1)), None),
        Case("video", "one-frame video, fps", lambda: load_video(video(1), fps=2.0, strategy="fps"), None),
        Case("video", "one-frame video, scene", lambda: load_video(video(1), num_frames=1, strategy="scene"), None),
        Case("video", "scenes: NaN threshold", lambda: detect_scenes(video(), threshold=float("nan")), "threshold"),
        Case("video", "scenes: negative ratio", lambda: detect_scenes(video(), ratio=-1.0), "ratio"),
        Case("video", "scenes: one-frame video", lambda: detect_scenes(video(1)), None),
        Case("video", "temporal pool: lengths 0", lambda: model("temporal_pool_tiny")(
            **{**tokens("temporal_pool_tiny"), "lengths": torch.tensor([3, 0])}), "lengths"),
        Case("video", "temporal transformer: wrong dim", lambda: model("temporal_transformer_tiny")(
            torch.randn(1, 3, 5)), "tokens"),
        Case("video", "timesformer: empty batch", lambda: model("timesformer_tiny")(
            tokens("timesformer_tiny")["tokens"][:0]), None, True),
        Case("video", "qformer: lengths > N", lambda: model("qformer_tiny")(
            torch.randn(1, 4, model("qformer_tiny").context_dim), torch.tensor([5])), "lengths"),
    ]


def moe_cases() -> list[Case]:
    moe = lambda: model("moe_tiny")
    dim = lambda: moe().config.dim
    return [
        Case("moe", "wrong width", lambda: moe()(torch.randn(2, 3, dim() + 1)), "x"),
        Case("moe", "int tokens", lambda: moe()(torch.ones(2, 3, dim(), dtype=torch.long)), "x"),
        Case("moe", "empty batch", lambda: moe()(torch.randn(0, 3, dim()), return_aux=True), None),
        Case("moe", "0-D", lambda: moe()(torch.tensor(1.0)), "x"),
        Case("moe", "top_k > num_experts", lambda: omnikit.create_model("moe_tiny", top_k=99), "top_k"),
        Case("moe", "num_experts 0", lambda: omnikit.create_model("moe_tiny", num_experts=0), "num_experts"),
        Case("moe", "capacity_factor -1", lambda: omnikit.create_model("moe_tiny", capacity_factor=-1.0),
             "capacity_factor"),
        Case("moe", "unknown scoring", lambda: omnikit.create_model("moe_tiny", scoring="tanh"), "scoring"),
        Case("moe", "update_bias wrong shape", lambda: model("moe_tiny", balance_bias=True).update_bias(
            torch.ones(3)), "tokens_per_expert"),
    ]


def _omni_inputs(name: str, **changes: Any) -> dict:
    kwargs = dict(model(name).contract_inputs([12, 12]).kwargs)
    kwargs.update(changes)
    return kwargs


def fusion_cases() -> list[Case]:
    from omnikit.fusion import Sampling

    thinker = lambda: model("thinker_tiny")
    vocab = lambda: thinker().config.vocab_size
    text = lambda: torch.full((1, 3), max(thinker().media_tokens.as_dict().values()) + 1)
    early = lambda: model("omni_early_tiny")
    ids = lambda: _omni_inputs("omni_early_tiny")["input_ids"]
    return [
        Case("fusion", "thinker: id = vocab", lambda: thinker()(torch.full((1, 3), vocab())), "input_ids"),
        Case("fusion", "thinker: negative id", lambda: thinker()(torch.full((1, 3), -1)), "input_ids"),
        Case("fusion", "thinker: float ids", lambda: thinker()(torch.zeros(1, 3)), "input_ids"),
        Case("fusion", "thinker: 1-D ids", lambda: thinker()(torch.zeros(3, dtype=torch.long)), "input_ids"),
        Case("fusion", "thinker: key_padding_mask too short", lambda: thinker()(
            text(), key_padding_mask=torch.ones(1, 2, dtype=torch.bool)), "key_padding_mask"),
        Case("fusion", "thinker: empty batch", lambda: thinker()(torch.zeros(0, 3, dtype=torch.long)), None, True),
        Case("fusion", "thinker: no tokens", lambda: thinker()(torch.zeros(1, 0, dtype=torch.long)), None, True),
        Case("fusion", "generate: eos = vocab", lambda: thinker().generate(text(),
                                                                          eos_token_id=vocab(), max_new_tokens=2),
             "eos_token_id"),
        Case("fusion", "generate: eos -1", lambda: thinker().generate(text(),
                                                                     eos_token_id=-1, max_new_tokens=2),
             "eos_token_id"),
        Case("fusion", "generate: max_new_tokens 0", lambda: thinker().generate(
            text(), max_new_tokens=0), "max_new_tokens"),
        Case("fusion", "generate: sampling dict", lambda: thinker().generate(
            text(), max_new_tokens=2, sampling={"temperature": 1.0}), "sampling"),
        Case("fusion", "Sampling: NaN temperature", lambda: Sampling(temperature=float("nan")), "temperature"),
        Case("fusion", "Sampling: top_k 2.5", lambda: Sampling(top_k=2.5), "top_k"),
        Case("fusion", "Sampling: top_p 0", lambda: Sampling(top_p=0.0), "top_p"),
        Case("fusion", "Sampling: top_p 1.5", lambda: Sampling(top_p=1.5), "top_p"),
        Case("fusion", "Sampling: temperature str", lambda: Sampling(temperature="1"), "temperature"),
        Case("fusion", "omni: one placeholder missing", lambda: early()(
            **_omni_inputs("omni_early_tiny", input_ids=_drop_first_placeholder(ids()))), "input_ids"),
        Case("fusion", "omni: audio lengths > L", lambda: early()(
            **_omni_inputs("omni_early_tiny", audio_lengths=torch.tensor([99, 99]))), "audio_lengths"),
        Case("fusion", "omni: frames wrong channels", lambda: early()(
            **_omni_inputs("omni_early_tiny", frames=torch.randn(2, 2, 1, 8, 8))), "frames"),
        Case("fusion", "omni: NaN audio", lambda: early()(
            **_omni_inputs("omni_early_tiny", audio_features=_nan_like(
                tuple(_omni_inputs("omni_early_tiny")["audio_features"].shape)))), "audio_features"),
        Case("fusion", "xattn: wrong frames dims", lambda: model("omni_xattn_tiny")(
            **_omni_inputs("omni_xattn_tiny", frames=torch.randn(2, 8, 8))), "frames"),
        Case("fusion", "tmrope: placeholder count mismatch", lambda: _tmrope_mismatch(), "input_ids"),
    ]


def _drop_first_placeholder(ids: torch.Tensor) -> torch.Tensor:
    ids = ids.clone()
    ids[:, 0] = ids[:, -1]
    return ids


def _tmrope_mismatch() -> Any:
    from omnikit.fusion import QWEN2_5_OMNI, MediaTokens, VisualGrid, tmrope_position_ids

    tokens = MediaTokens(image=5, video=6, audio=7)
    ids = torch.tensor([[1, 6, 6, 6, 2]])
    return tmrope_position_ids(ids, tokens, videos=[VisualGrid(1, 2, 2)], scheme=QWEN2_5_OMNI)


def speech_cases() -> list[Case]:
    talker = lambda: model("talker_tiny")
    cfg = lambda: talker().config
    duplex = lambda: model("duplex_tiny")
    dcfg = lambda: duplex().config

    def talk(codes: torch.Tensor, text: torch.Tensor | None = None, **kwargs: Any) -> Any:
        text = torch.randn(codes.shape[0], codes.shape[-1], cfg().thinker_dim) if text is None else text
        return talker()(codes, text, **kwargs)

    def codes(value: int | None = None, batch: int = 1, frames: int = 4) -> torch.Tensor:
        shape = (batch, cfg().num_codebooks, frames)
        return torch.zeros(shape, dtype=torch.long) if value is None else torch.full(shape, value)

    def stream(**kwargs: Any) -> Any:
        states = iter([torch.randn(kwargs.pop("rows", 1), cfg().thinker_dim)] * 3)
        return talker().stream_codes(states, **{"batch_size": 1, "max_frames": 3, **kwargs})

    def duplex_stream(frame: torch.Tensor) -> Any:
        return duplex().stream([frame])

    def duplex_forward(user_value: int) -> Any:
        k, steps = dcfg().num_codebooks, 5
        text = torch.zeros(1, steps, dtype=torch.long)
        return duplex()(text, torch.zeros(1, k, steps, dtype=torch.long), torch.full((1, k, steps), user_value))

    return [
        Case("speech", "talker: code = vocab", lambda: talk(codes(cfg().vocab)), "codes"),
        Case("speech", "talker: negative code", lambda: talk(codes(-1)), "codes"),
        Case("speech", "talker: wrong K", lambda: talker()(torch.zeros(1, cfg().num_codebooks + 1, 4,
                                                                         dtype=torch.long),
                                                             torch.randn(1, 4, cfg().thinker_dim)), "codes"),
        Case("speech", "talker: text batch mismatch", lambda: talk(codes(), torch.randn(2, 4, cfg().thinker_dim)),
             "text"),
        Case("speech", "talker: lengths > F", lambda: talk(codes(), lengths=torch.tensor([9])), "lengths"),
        Case("speech", "talker: empty batch", lambda: talk(codes(batch=0)), None, True),
        Case("speech", "stream: frames_per_token 0", lambda: stream(frames_per_token=0), "frames_per_token"),
        Case("speech", "stream: max_frames 0", lambda: stream(max_frames=0), "max_frames"),
        Case("speech", "stream: max_frames -1", lambda: stream(max_frames=-1), "max_frames"),
        Case("speech", "stream: batch_size 0", lambda: stream(batch_size=0), "batch_size"),
        Case("speech", "stream: text batch mismatch", lambda: stream(rows=2), "text_steps"),
        Case("speech", "duplex: user code = pad + 1", lambda: duplex_forward(dcfg().codebook_size + 1), "user"),
        Case("speech", "duplex stream: user code = pad + 1", lambda: duplex_stream(
            torch.full((1, dcfg().num_codebooks), dcfg().codebook_size + 1)), "user_frames"),
        Case("speech", "duplex stream: negative code", lambda: duplex_stream(
            torch.full((1, dcfg().num_codebooks), -1)), "user_frames"),
        Case("speech", "duplex stream: wrong K", lambda: duplex_stream(
            torch.zeros(1, dcfg().num_codebooks + 1, dtype=torch.long)), "user_frames"),
        Case("speech", "turn taking: wrong dim", lambda: model("turn_taking_tiny")(torch.randn(1, 4, 3)), "states"),
        Case("speech", "thinker-talker: frames_per_token 0", lambda: omnikit.create_model(
            "thinker_talker_tiny", frames_per_token=0), "frames_per_token"),
        Case("speech", "streaming: batch_size 0", lambda: _open_stream(talker(), 0), "batch_size"),
        Case("speech", "streaming: batch mismatch", lambda: _stream_mismatch(), "x"),
    ]


def _open_stream(module: torch.nn.Module, batch: int) -> Any:
    with module.streaming(batch):
        return None


def _stream_mismatch() -> Any:
    decoder = model("decoder_tiny")
    with decoder.streaming(2):
        return decoder(torch.zeros(3, 2, dtype=torch.long))


def checkpoint_cases() -> list[Case]:
    def saved() -> Path:
        directory = Path(tempfile.mkdtemp(prefix="omnikit_fuzz_ckpt_"))
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), directory)
        return directory

    def corrupt_config(text: str) -> Any:
        directory = saved()
        (directory / "config.json").write_text(text)
        return omnikit.load_pretrained(directory)

    def corrupt_weights(cut: int) -> Any:
        directory = saved()
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:cut])
        return omnikit.load_pretrained(directory)

    def oversized() -> Any:
        directory = saved()
        config = json.loads((directory / "config.json").read_text())
        config["overrides"] = {"vocab_size": 2**31, "dim": 2**14}
        (directory / "config.json").write_text(json.dumps(config))
        return omnikit.load_pretrained(directory)

    def other_dtype() -> Any:
        from safetensors.torch import load_file, save_file

        directory = saved()
        state = load_file(str(directory / "model.safetensors"))
        state["embed.weight"] = state["embed.weight"].half()
        save_file(state, str(directory / "model.safetensors"))
        return omnikit.load_pretrained(directory)

    return [
        Case("checkpoint", "config not JSON", lambda: corrupt_config("{"), "config.json"),
        Case("checkpoint", "config list", lambda: corrupt_config("[]"), "config.json"),
        Case("checkpoint", "config depth str", lambda: corrupt_config(
            '{"format_version": 1, "name": "decoder_tiny", "overrides": {"depth": "2"}}'), "depth"),
        Case("checkpoint", "config unknown model", lambda: corrupt_config(
            '{"format_version": 1, "name": "nope"}'), "nope"),
        Case("checkpoint", "weights truncated to 5 bytes", lambda: corrupt_weights(5), "model.safetensors"),
        Case("checkpoint", "weights truncated to 100 bytes", lambda: corrupt_weights(100), "model.safetensors"),
        Case("checkpoint", "weights truncated at half", lambda: corrupt_weights(20000), "model.safetensors"),
        Case("checkpoint", "config asks for 128 TB", oversized, "embed.weight"),
        Case("checkpoint", "float16 tensor in float32 checkpoint", other_dtype, "embed.weight"),
        Case("checkpoint", "missing directory", lambda: omnikit.load_pretrained("/nonexistent/ckpt"), "config.json"),
        Case("checkpoint", "save a meta model", lambda: omnikit.save_pretrained(
            omnikit.create_model("decoder_tiny", device="meta"), tempfile.mkdtemp()), "model"),
    ]


def registry_cases() -> list[Case]:
    create = omnikit.create_model
    return [
        Case("registry", "unknown name", lambda: create("decoder_tinny"), "decoder_tiny"),
        Case("registry", "unknown override", lambda: create("decoder_tiny", width=3), "width"),
        Case("registry", "depth str", lambda: create("decoder_tiny", depth="2"), "depth"),
        Case("registry", "depth 0", lambda: create("decoder_tiny", depth=0), "depth"),
        Case("registry", "dim -8", lambda: create("decoder_tiny", dim=-8), "dim"),
        Case("registry", "num_heads not dividing dim", lambda: create("decoder_tiny", num_heads=3), "num_heads"),
        Case("registry", "num_kv_heads not dividing", lambda: create("decoder_tiny", num_kv_heads=3),
             "num_kv_heads"),
        Case("registry", "norm_eps NaN", lambda: create("decoder_tiny", norm_eps=float("nan")), "norm_eps"),
        Case("registry", "norm_eps 0", lambda: create("decoder_tiny", norm_eps=0.0), "norm_eps"),
        Case("registry", "rope_base -1", lambda: create("decoder_tiny", rope_base=-1.0), "rope_base"),
        Case("registry", "vocab_size 0", lambda: create("decoder_tiny", vocab_size=0), "vocab_size"),
        Case("registry", "n_mels 0", lambda: create("whisper_encoder_tiny", n_mels=0), "n_mels"),
        Case("registry", "n_window 0", lambda: create("qwen2_5_omni_audio_tiny", n_window=0), "n_window"),
        Case("registry", "codebook_size 0", lambda: create("seanet_codec_tiny", codebook_size=0), "codebook_size"),
        Case("registry", "frame_rate inf", lambda: create("duplex_tiny", frame_rate=float("inf")), "frame_rate"),
        Case("registry", "dtype int", lambda: create("decoder_tiny", dtype=torch.int64), "dtype"),
        Case("registry", "list_models bad kind", lambda: omnikit.list_models(kind="vision"), "kind"),
        Case("registry", "mlp_ratio 0", lambda: create("perceiver_resampler_tiny", mlp_ratio=0.0), "mlp_ratio"),
        Case("registry", "meta build of a 30B preset", lambda: create("qwen3_0_6b", device="meta"), None),
    ]


FAMILIES: dict[str, Callable[[], list[Case]]] = {
    "audio": audio_cases,
    "codec": codec_cases,
    "vision": vision_cases,
    "video": video_cases,
    "moe": moe_cases,
    "fusion": fusion_cases,
    "speech": speech_cases,
    "checkpoint": checkpoint_cases,
    "registry": registry_cases,
    "round3": lambda: __import__("fuzz_cases_round3").round3_cases(),
    "round4": lambda: __import__("fuzz_cases_round4").round4_cases(),
}


def run(families: list[str], memory_mb: float) -> list[tuple[Case, str, str]]:
    results = []
    for family in families:
        try:
            cases = FAMILIES[family]()
        except Exception as exc:  # a family whose setup fails is reported, not hidden
            print(f"family {family}: setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        for case in cases:
            outcome, detail = classify(case, memory_mb)
            results.append((case, outcome, detail))
    return results


def table(results: list[tuple[Case, str, str]], details: bool) -> str:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case, outcome, _ in results:
        counts[case.family][outcome] += 1
        counts["total"][outcome] += 1
    lines = ["| family | cases | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    for family, counter in sorted(counts.items(), key=lambda item: item[0] == "total"):
        label = f"**{family}**" if family == "total" else family
        lines.append(f"| {label} | {sum(counter.values())} | " + " | ".join(str(counter[o]) for o in OUTCOMES) + " |")
    if details:
        lines += ["", "| family | input | outcome | detail |", "|---|---|---|---|"]
        for case, outcome, detail in results:
            lines.append(f"| {case.family} | {case.label} | {outcome} | {detail.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="repeatable; default all")
    parser.add_argument("--details", action="store_true", help="one row per case")
    parser.add_argument("--memory-mb", type=float, default=500.0, help="peak growth counted as a blow-up")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = run(args.family or list(FAMILIES), args.memory_mb)
    print(table(results, args.details))


if __name__ == "__main__":
    main()
