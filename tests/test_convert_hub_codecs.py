"""transformers' EncodecModel checkpoints load as omnikit codec tokenizers with identical codes and audio."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
pytest.importorskip("encodec")

from omnikit.audio.encodec_codec import EncodecTokenizer  # noqa: E402
from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402


def _hf_encodec() -> torch.nn.Module:
    config = transformers.EncodecConfig(hidden_size=16, num_filters=4, upsampling_ratios=[8, 5, 4, 2],
                                        target_bandwidths=[1.5, 3.0], codebook_size=32, sampling_rate=24000)
    torch.manual_seed(0)
    model = transformers.EncodecModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "original0" in name:
                param.copy_(torch.randn_like(param) * 0.3 + (1.0 if "original0" in name else 0.0))
        for name, buffer in model.named_buffers():
            if name.endswith("codebook.embed"):
                buffer.normal_()
    return model


def _check_same_codec(tok: EncodecTokenizer, hf: torch.nn.Module) -> None:
    wav = torch.randn(2, 1, 1700, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert tok.bandwidth == 1.5 and tok.num_codebooks == 4  # transformers' default: the first bandwidth
        torch.testing.assert_close(tok(**hf_inputs(tok, {"input_values": wav})), hf(wav).audio_values,
                                   rtol=1e-5, atol=1e-6)
        tok.bandwidth = 3.0
        ref = hf.encode(wav, bandwidth=3.0).audio_codes[0]
        codes = tok.encode(wav)
        assert codes.shape[1] == 8 and torch.equal(codes, ref)
        torch.testing.assert_close(tok.decode(codes), hf.decode(ref[None], [None]).audio_values, rtol=1e-5, atol=1e-6)
        tok.bandwidth = 1.5


def test_encodec_checkpoint_gives_identical_codes_and_audio(tmp_path):
    hf = _hf_encodec()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tok = load_hf(tmp_path / "hf")
    assert isinstance(tok, EncodecTokenizer) and tok.codebook_size == 32
    _check_same_codec(tok, hf)
    save_hf(tok, tmp_path / "back", max_shard_size="20KB")
    _check_same_codec(tok, transformers.EncodecModel.from_pretrained(tmp_path / "back").eval())


def test_encodec_legacy_weight_norm_names_load(tmp_path):
    """Published EnCodec checkpoints spell the weight norm ``conv.weight_g`` / ``conv.weight_v``."""
    hf = _hf_encodec()
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                            "weight_v"): v for k, v in state.items()}
    assert any(k.endswith("conv.weight_g") for k in old)
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["EncodecModel"]
    _check_same_codec(load_hf(tmp_path), hf)
