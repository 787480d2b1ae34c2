"""Hypothesis fuzzing of the public entry points: a clear error or a finite answer, never anything else.

Each registered ``*_tiny`` model is called with its own valid contract inputs after one random
mutation of one argument (dtype, rank, an empty or a long axis, NaN / inf / huge / negative values,
a non-tensor). The outcome must be a ``ValueError`` / ``TypeError`` (the library's documented error
types) or an output whose floating tensors are all finite: never another exception from inside torch,
never a silent NaN. The same holds for the feature, position and sampling functions below. Example
counts are small so the file stays within a minute or two on the CI machine.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnikit
from omnikit.audio.features import log_mel_spectrogram
from omnikit.fusion import QWEN2_5_OMNI, MediaTokens, tmrope_position_ids

FUZZ = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
CLEAR = (ValueError, TypeError)
#: models whose contract inputs hold no tensor to mutate are skipped by the model test
MODELS = omnikit.list_models("*_tiny")


@functools.cache
def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name).eval()


def _finite(out: Any, seen: set[int] | None = None) -> bool:
    """Whether every floating tensor reachable from ``out`` is finite."""
    seen = set() if seen is None else seen
    if id(out) in seen:
        return True
    seen.add(id(out))
    if isinstance(out, torch.Tensor):
        return not out.is_floating_point() or out.device.type == "meta" or bool(torch.isfinite(out).all())
    if isinstance(out, (list, tuple)):
        return all(_finite(o, seen) for o in out)
    if isinstance(out, dict):
        return all(_finite(o, seen) for o in out.values())
    if hasattr(out, "__dict__") and not isinstance(out, torch.nn.Module):
        return all(_finite(o, seen) for o in vars(out).values())
    return True


def _judge(call) -> None:
    try:
        with torch.no_grad():
            out = call()
    except CLEAR:
        return
    assert _finite(out), "a finite answer or a clear error was expected, got non-finite values"


MUTATIONS = ("nan", "inf", "negative", "float64", "int", "bool", "empty_last", "empty_first",
             "extra_dim", "drop_dim", "long_last", "list", "none", "string")


def _mutate(value: torch.Tensor, how: str) -> Any:
    if how in ("nan", "inf", "huge"):
        if not value.is_floating_point():
            return value.float().fill_(float(how) if how != "huge" else 1e30)
        out = value.clone()
        out.view(-1)[: max(1, out.numel() // 3)] = {"nan": float("nan"), "inf": float("inf"), "huge": 1e30}[how]
        return out
    if how == "negative":
        return -value.abs() - 1
    if how == "float64":
        return value.double()
    if how == "int":
        return value.long()
    if how == "bool":
        return value != 0
    if how == "empty_last":
        return value[..., :0]
    if how == "empty_first":
        return value[:0]
    if how == "extra_dim":
        return value[None]
    if how == "drop_dim":
        return value[0] if value.ndim else value
    if how == "long_last":
        return torch.cat([value] * 3, dim=-1) if value.ndim else value
    if how == "list":
        return value.tolist()
    if how == "none":
        return None
    return "bad"


@pytest.mark.parametrize("name", MODELS)
@FUZZ
@given(data=st.data())
def test_registered_models_give_a_clear_error_or_finite_outputs(name: str, data: st.DataObject) -> None:
    model = _model(name)
    kwargs = dict(model.contract_inputs([13, 9], seed=0).kwargs)
    tensors = sorted(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    if not tensors:
        pytest.skip("no tensor input to mutate")
    key = data.draw(st.sampled_from(tensors), label="argument")
    how = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    kwargs[key] = _mutate(kwargs[key], how)
    _judge(lambda: model(**kwargs))


@FUZZ
@given(samples=st.integers(0, 4000), amplitude=st.sampled_from([0.0, 1e-30, 1.0, 1e20, float("nan"), float("inf")]),
       rate=st.sampled_from([16000, 8000, 0, -1]), n_mels=st.sampled_from([80, 128, 0, -3]))
def test_log_mel_spectrogram(samples: int, amplitude: float, rate: int, n_mels: int) -> None:
    wav = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples)) * amplitude
    _judge(lambda: log_mel_spectrogram(wav, sample_rate=rate, n_mels=n_mels))


@FUZZ
@given(counts=st.lists(st.one_of(st.integers(-3, 6), st.floats(-2, 6)), min_size=0, max_size=3),
       placeholders=st.integers(0, 6), seconds=st.sampled_from([2.0, 0.0, -1.0, float("nan")]))
def test_tmrope_position_ids(counts: list, placeholders: int, seconds: float) -> None:
    ids = torch.tensor([[1] + [7] * placeholders + [2]])

    def call() -> Any:
        from omnikit.fusion.tmrope import TMRoPEScheme

        scheme = TMRoPEScheme(seconds_per_chunk=seconds) if seconds != 2.0 else QWEN2_5_OMNI
        return tmrope_position_ids(ids, MediaTokens(audio=7), audios=counts, scheme=scheme)

    _judge(call)


@FUZZ
@given(kwargs=st.fixed_dictionaries({}, optional={
    "temperature": st.sampled_from([0.0, 0.7, -1.0, float("nan")]), "top_p": st.sampled_from([0.9, 0.0, 2.0]),
    "top_k": st.sampled_from([1, 0, -5]), "do_sample": st.sampled_from([True, False, "yes"]),
    "max_new_tokens": st.sampled_from([1, 3, 0, -1]), "repetition_penalty": st.sampled_from([1.2, 0.0])}),
    prompt=st.integers(0, 4))
def test_generate_settings(kwargs: dict, prompt: int) -> None:
    lm = _model("decoder_tiny")
    ids = torch.ones(1, prompt, dtype=torch.long)
    kwargs.setdefault("max_new_tokens", 2)
    _judge(lambda: lm.generate(ids, generator=torch.Generator().manual_seed(0), **kwargs).tokens)


@FUZZ
@given(name=st.sampled_from(["decoder_tiny", "moe_tiny", "whisper_encoder_tiny", "seanet_codec_tiny"]),
       field=st.sampled_from(["dim", "depth", "num_heads", "norm_eps", "mlp", "vocab_size", "n_mels", "bogus"]),
       value=st.sampled_from([0, -1, 3, 2.5, float("nan"), "2", None, [1], True]))
def test_create_model_overrides(name: str, field: str, value: Any) -> None:
    def call() -> Any:
        model = omnikit.create_model(name, device="meta", **{field: value})
        return sum(p.numel() for p in model.parameters())

    try:
        call()
    except (*CLEAR, KeyError):
        pass
