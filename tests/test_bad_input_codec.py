"""Codecs and quantizers under bad input: non-finite vectors, out-of-range codes, NaN padding."""

from __future__ import annotations

import pytest
import torch

from omnikit.audio import ResidualVQ
from omnikit.audio.quantize import kmeans


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("initialised", [False, True])
def test_non_finite_training_input_is_refused_and_codebooks_untouched(ema, initialised) -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 2, 16, ema=ema).train()
    if initialised:
        rvq(torch.randn(4, 10, 8))
    before = _state(rvq)
    x = torch.randn(4, 10, 8)
    x[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"`x` expected finite values but got 1 NaN/inf.*codebook was left untouched"):
        rvq(x)
    for key, value in rvq.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"


def test_non_finite_padding_is_ignored_by_the_codebook_update() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 2, 16).train()
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    x[1, 6:] = float("nan")
    out = rvq(x, mask)
    assert torch.isfinite(out.loss) and torch.isfinite(rvq.layers[0].codebook).all()
    assert torch.isfinite(out.quantized[mask]).all()


def test_kmeans_refuses_non_finite_and_empty_input() -> None:
    with pytest.raises(ValueError, match="`x` expected finite values"):
        kmeans(torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="`x` expected at least one row"):
        kmeans(torch.zeros(0, 3), 2)
    with pytest.raises(ValueError, match="`k` expected an int > 0"):
        kmeans(torch.zeros(4, 3), 0)


@pytest.fixture()
def codec(tiny_model) -> torch.nn.Module:
    return tiny_model("seanet_codec_tiny")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda c: torch.full((1, c.num_codebooks, 4), c.codebook_size), ValueError, r"`codes` expected values in"),
        (lambda c: torch.full((1, c.num_codebooks, 4), -1), ValueError, r"`codes` expected values in"),
        (lambda c: torch.zeros(1, c.num_codebooks, 4), TypeError, r"`codes` expected an integer tensor"),
        (lambda c: torch.zeros(1, c.num_codebooks + 1, 4, dtype=torch.long), ValueError, r"`codes` expected shape"),
        (lambda c: torch.zeros(1, c.num_codebooks, 0, dtype=torch.long), ValueError, r"`codes` expected at least one"),
    ],
)
def test_codec_decode_checks_codes(codec, make, error, message) -> None:
    with pytest.raises(error, match=message):
        codec.decode(make(codec))


def test_codec_encode_names_short_and_non_finite_wav(codec) -> None:
    with pytest.raises(ValueError, match=r"`wav` expected at least one frame"):
        codec.encode(torch.randn(1, 1, 3))
    with pytest.raises(ValueError, match=r"`wav` expected finite values"):
        codec.encode(torch.full((1, 1, 64), float("nan")))
