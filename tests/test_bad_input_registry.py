"""configure() validates hyper-parameters once; Sampling validates its settings (property tests)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import omnikit
from omnikit.fusion import Sampling
from omnikit.models.sampling import sample_next
from omnikit.registry import configure
from omnikit.utils.config_checks import Range, validate_config


@pytest.mark.parametrize(
    "name, override, error, message",
    [
        ("decoder_tiny", {"depth": "2"}, TypeError, r"`depth` expected int but got str"),
        ("decoder_tiny", {"depth": 2.0}, TypeError, r"`depth` expected int"),
        ("decoder_tiny", {"tie_embeddings": 1}, TypeError, r"`tie_embeddings` expected bool"),
        ("decoder_tiny", {"dim": 0}, ValueError, r"`dim` expected values in \[1, inf\]"),
        ("decoder_tiny", {"num_heads": -4}, ValueError, r"`num_heads`"),
        ("decoder_tiny", {"norm_eps": 0.0}, ValueError, r"`norm_eps` expected values in \(0, inf\]"),
        ("decoder_tiny", {"norm_eps": float("nan")}, ValueError, r"`norm_eps` expected finite"),
        ("decoder_tiny", {"rope_base": -1.0}, ValueError, r"`rope_base`"),
        ("decoder_tiny", {"rope_base": float("inf")}, ValueError, r"`rope_base` expected finite"),
        ("moe_tiny", {"top_k": 0}, ValueError, r"`top_k`"),
        ("moe_tiny", {"route_scale": float("nan")}, ValueError, r"`route_scale`"),
        ("whisper_encoder_tiny", {"n_mels": 0}, ValueError, r"`n_mels`"),
    ],
)
def test_configure_names_the_bad_field(name, override, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        omnikit.create_model(name, device="meta", **override)
    assert name in str(info.value)


@dataclass
class _Toy:
    dim: int
    eps: float
    dropout: float = 0.0
    window: int | None = None
    strides: tuple[int, ...] = (2, 2)
    gain: float = field(default=1.0, metadata={"range": Range(0.5, 2.0)})


_VALID = {"dim": st.integers(1, 4096), "eps": st.floats(1e-12, 1.0), "dropout": st.floats(0.0, 0.99),
          "window": st.none() | st.integers(1, 64), "strides": st.lists(st.integers(1, 8), max_size=4).map(tuple),
          "gain": st.floats(0.5, 2.0)}
_ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(max_size=3), st.tuples(st.integers(-3, 3)))


@settings(max_examples=200, deadline=None)
@given(valid=st.fixed_dictionaries(_VALID))
def test_configure_accepts_every_valid_config(valid) -> None:
    assert configure(_Toy, "toy", valid).dim == valid["dim"]


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(_VALID)), value=_ANYTHING, valid=st.fixed_dictionaries(_VALID))
def test_configure_rejects_or_accepts_consistently(key, value, valid) -> None:
    """Any value either fits the field (type and range) or raises naming exactly that field."""
    try:
        config = configure(_Toy, "toy", {**valid, key: value})
    except (TypeError, ValueError) as exc:
        assert f"`{key}`" in str(exc) and "toy" in str(exc)
    else:
        got = getattr(config, key)
        assert got == value or (isinstance(got, float) and math.isnan(got) is False)
        numbers = [got] if isinstance(got, (int, float)) else list(got or ())
        assert all(math.isfinite(n) for n in numbers)
        if key in ("dim",):
            assert isinstance(got, int) and not isinstance(got, bool) and got >= 1
        if key == "eps":
            assert got > 0
        if key == "dropout":
            assert 0 <= got < 1
        if key == "gain":
            assert 0.5 <= got <= 2.0


def test_sequences_may_be_lists_but_their_items_are_checked() -> None:
    assert configure(_Toy, "toy", {"dim": 1, "eps": 1e-5, "strides": [2, 3]}).strides == [2, 3]
    with pytest.raises(TypeError, match="`strides`"):
        configure(_Toy, "toy", {"dim": 1, "eps": 1e-5, "strides": [2, "3"]})
    with pytest.raises(ValueError, match="`strides`"):
        configure(_Toy, "toy", {"dim": 1, "eps": 1e-5, "strides": [2, 0]})


def test_nested_dataclass_fields_are_validated_with_their_path() -> None:
    @dataclass
    class Outer:
        inner: _Toy

    with pytest.raises(ValueError, match=r"outer: `inner\.dim`|inner: `dim`"):
        validate_config(Outer(_Toy(dim=0, eps=1e-5)), "outer")


@settings(max_examples=200, deadline=None)
@given(
    temperature=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 5), st.text(max_size=2)),
    top_k=st.one_of(st.none(), st.integers(-2, 300), st.floats(0, 10), st.booleans()),
    top_p=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_sampling_settings_are_valid_or_refused(temperature, top_k, top_p) -> None:
    try:
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    except (TypeError, ValueError) as exc:
        assert any(f"`{name}`" in str(exc) for name in ("temperature", "top_k", "top_p"))
        return
    assert math.isfinite(sampling.temperature) and sampling.temperature >= 0
    assert sampling.top_k is None or (type(sampling.top_k) is int and sampling.top_k >= 1)
    assert sampling.top_p is None or 0 < sampling.top_p <= 1
    token = sample_next(torch.randn(2, 50), sampling, generator=torch.Generator().manual_seed(0))
    assert token.shape == (2,) and bool(((token >= 0) & (token < 50)).all())


def test_tiny_temperature_does_not_overflow_to_nan() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    token = sample_next(logits, Sampling(temperature=1e-30), generator=torch.Generator().manual_seed(0))
    assert token.tolist() == [1]


@pytest.mark.parametrize("name", [123, None, ["decoder_tiny"]])
def test_create_model_names_a_non_string_name(name) -> None:
    with pytest.raises(TypeError, match="`name` expected a registered model name"):
        omnikit.create_model(name)


@pytest.mark.parametrize(("field", "choices"), [("mlp", "'swiglu', 'gelu'"), ("norm", "'rmsnorm', 'layernorm'")])
def test_literal_fields_list_their_choices(field: str, choices: str) -> None:
    with pytest.raises(TypeError, match=f"`{field}` expected one of {choices} but got str"):
        omnikit.create_model("decoder_tiny", **{field: "bogus"})
