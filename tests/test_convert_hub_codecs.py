"""transformers' EncodecModel checkpoints load as omnikit codec tokenizers with identical codes and audio."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
pytest.importorskip("encodec")

from references import hf_tiny_mimi_config, randomise_mimi  # noqa: E402

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


def _assert_same_codec(tok: torch.nn.Module, wav: torch.Tensor, codes: torch.Tensor, audio: torch.Tensor,
                       reconstruction: torch.Tensor) -> None:
    """``tok`` encodes ``wav`` to ``codes``, decodes them to ``audio`` and reconstructs ``wav`` as given."""
    assert torch.equal(tok.encode(wav), codes) and codes.unique().numel() > 4
    torch.testing.assert_close(tok.decode(codes), audio, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tok(**hf_inputs(tok, {"input_values": wav})), reconstruction, rtol=1e-5, atol=1e-6)


def _check_same_codec(tok: EncodecTokenizer, hf: torch.nn.Module) -> None:
    wav = torch.randn(2, 1, 1700, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert tok.bandwidth == 1.5 and tok.num_codebooks == 4  # transformers' default: the first bandwidth
        ref = hf.encode(wav).audio_codes[0]
        _assert_same_codec(tok, wav, ref, hf.decode(ref[None], [None]).audio_values, hf(wav).audio_values)
        tok.bandwidth = 3.0
        assert torch.equal(tok.encode(wav), hf.encode(wav, bandwidth=3.0).audio_codes[0])
        tok.bandwidth = 1.5




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


def _hf_mimi() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_mimi(transformers.MimiModel(hf_tiny_mimi_config(transformers)))


def _check_same_mimi(tok: torch.nn.Module, hf: torch.nn.Module) -> None:
    wav = torch.randn(2, 1, 333, generator=torch.Generator().manual_seed(3))  # 42 transformer steps > window 5
    with torch.no_grad():
        ref = hf.encode(wav).audio_codes
        _assert_same_codec(tok, wav, ref, hf.decode(ref).audio_values, hf(wav).audio_values)
        tok.num_codebooks = 2
        assert torch.equal(tok.encode(wav), hf.encode(wav, num_quantizers=2).audio_codes)
        tok.num_codebooks = 3


@pytest.mark.parametrize("kind", ["encodec", "mimi"])
def test_codec_checkpoint_gives_identical_codes_and_audio(tmp_path, kind):
    from omnikit.audio.mimi import MimiTokenizer

    make, check, cls = {"encodec": (_hf_encodec, _check_same_codec, EncodecTokenizer),
                        "mimi": (_hf_mimi, _check_same_mimi, MimiTokenizer)}[kind]
    hf = make()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tok = load_hf(tmp_path / "hf")
    assert isinstance(tok, cls) and tok.codebook_size == hf.config.codebook_size
    check(tok, hf)
    save_hf(tok, tmp_path / "back", max_shard_size="20KB")
    check(tok, type(hf).from_pretrained(tmp_path / "back").eval())


def test_mimi_rates_and_codebooks(tmp_path):
    _hf_mimi().save_pretrained(tmp_path)
    tok = load_hf(tmp_path)
    assert (tok.num_codebooks, tok.frame_rate, tok.hop, tok.sample_rate) == (3, 50, 16, 800)
    assert tok.output_lengths(torch.tensor([333])).tolist() == [21]
    with pytest.raises(ValueError, match="between 1 and 3 codebooks but got 4"):
        tok.decode(torch.zeros(1, 4, 2, dtype=torch.long))


def test_mimi_defaults_are_the_published_structure():
    """``MimiConfig()`` holds kyutai/mimi's values: as many tensors and elements as transformers' default Mimi."""
    from omnikit.audio.mimi import MimiConfig, MimiTokenizer
    from omnikit.convert.hub_mimi import MIMI, mimi_key_map

    with torch.device("meta"):
        ours = MimiTokenizer(MimiConfig())
        reference = transformers.MimiModel(transformers.MimiConfig(frame_rate=12.5))
    config = reference.config.to_dict() | {"frame_rate": 12.5}
    plan = mimi_key_map(MIMI(config)).plan({k: v.shape for k, v in ours.state_dict().items()})
    theirs = reference.state_dict()
    assert sum(len([p for p in pieces if p.source]) for pieces in plan.values()) == len(theirs)
    assert sum(t.numel() for t in ours.state_dict().values()) == sum(t.numel() for t in theirs.values())


def test_mimi_forward_is_decode_of_encode_and_trains_straight_through():
    """``forward`` reconstructs like ``decode(encode(wav))``, its framed form holds the same samples frame by
    frame, and gradients reach the encoder through the quantizers (the registered ``mimi_tiny``)."""
    from omnikit import create_model

    torch.manual_seed(0)
    tok = create_model("mimi_tiny")
    wav = torch.randn(2, 1, 10 * tok.hop, generator=torch.Generator().manual_seed(5)) * 0.1
    assert tok.encode(wav).unique().numel() > 3  # the fresh codebooks do not map everything to one code
    reconstruction = tok(wav)
    assert torch.equal(reconstruction.detach(), tok.decode(tok.encode(wav)))
    framed = tok(wav, torch.tensor([10 * tok.hop, 7 * tok.hop]), framed=True)
    assert framed.lengths.tolist() == [10, 7]
    torch.testing.assert_close(framed.hidden_states[0].reshape(-1), reconstruction[0, 0].detach().reshape(-1))
    reconstruction.square().mean().backward()
    assert tok.encoder[0].conv.weight.grad.abs().sum() > 0 and tok.semantic.input_proj.weight.grad is not None
