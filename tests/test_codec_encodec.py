"""EnCodec wrapper: identical codes and audio to the encodec package, bandwidths, local weights."""

from __future__ import annotations

import pytest
import torch

from omnikit.audio import Codec
from omnikit.audio.encodec_codec import EncodecTokenizer, load_encodec
from omnikit.convert import from_encodec

encodec = pytest.importorskip("encodec")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return encodec.EncodecModel.encodec_model_24khz(pretrained=False).eval()


def test_codes_and_audio_equal_the_package(model: torch.nn.Module) -> None:
    tok = from_encodec(model)
    assert isinstance(tok, Codec)
    assert (tok.sample_rate, tok.frame_rate, tok.codebook_size, tok.num_codebooks) == (24000, 75, 1024, 8)
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 1, 24000 * 3 // 4 + 37, generator=g) * 0.2  # not a whole number of frames
    codes = tok.encode(wav)
    model.set_target_bandwidth(6.0)
    with torch.no_grad():
        (expected, _), = model.encode(wav)
        expected_audio = model.decode([(expected, None)])
    assert codes.dtype == torch.int64 and codes.shape == (2, 8, tok.output_lengths(wav.shape[-1]))
    assert torch.equal(codes, expected)
    assert torch.equal(tok.decode(codes), expected_audio)
    assert tok(wav).shape == wav.shape


@pytest.mark.parametrize("bandwidth,codebooks", [(1.5, 2), (3.0, 4), (6.0, 8), (12.0, 16), (24.0, 32)])
def test_bandwidth_sets_the_number_of_codebooks(model: torch.nn.Module, bandwidth: float, codebooks: int) -> None:
    tok = EncodecTokenizer(model, bandwidth)
    assert tok.num_codebooks == codebooks
    assert tok.encode(torch.randn(1, 1, 640) * 0.1).shape == (1, codebooks, 2)


def test_local_weights_roundtrip(model: torch.nn.Module, tmp_path) -> None:
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "encodec.safetensors"))
    loaded = load_encodec(tmp_path / "encodec.safetensors", bandwidth=3.0)
    wav = torch.randn(1, 1, 4800) * 0.1
    assert torch.equal(loaded.encode(wav), EncodecTokenizer(model, 3.0).encode(wav))
    torch.save(model.state_dict(), tmp_path / "encodec.th")
    with pytest.raises(ValueError, match="allow_pickle"):
        load_encodec(tmp_path / "encodec.th")
    assert load_encodec(tmp_path / "encodec.th", allow_pickle=True).num_codebooks == 8


def test_bad_inputs_raise(model: torch.nn.Module) -> None:
    tok = EncodecTokenizer(model, 1.5)
    with pytest.raises(ValueError, match="bandwidth"):
        EncodecTokenizer(model, 5.0)
    with pytest.raises(ValueError, match="1 channel"):
        tok.encode(torch.randn(1, 2, 640))
    with pytest.raises(ValueError, match="codes"):
        tok.decode(torch.full((1, 2, 3), 1024))
    with pytest.raises(ValueError, match=r"codes.*shape"):
        tok.decode(torch.zeros(1, 8, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="EncodecModel"):
        EncodecTokenizer(torch.nn.Linear(2, 2))
