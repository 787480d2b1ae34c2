"""transformers' DacModel checkpoints load as omnikit codec tokenizers: identical codes, decoded audio at float32
rounding, and ``save_hf`` writes what ``DacModel.from_pretrained`` reads back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from omnikit.audio.dac import DacCodec  # noqa: E402
from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402


def _hf_dac() -> torch.nn.Module:
    """A tiny DacModel (hop 2 * 3 = 6: an odd ratio too) with randomised Snakes, biases and codebooks."""
    config = transformers.DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 3], decoder_hidden_size=16,
                                    n_codebooks=3, codebook_size=16, codebook_dim=4, sampling_rate=600)
    torch.manual_seed(0)
    model = transformers.DacModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("alpha"):
                param.uniform_(0.5, 2.0)
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn_like(param))
            elif name.endswith("codebook.weight"):
                param.normal_()
            else:
                param.copy_(torch.randn_like(param) / param[0].numel() ** 0.5)
    return model


def _check_same_dac(tok: DacCodec, hf: torch.nn.Module) -> None:
    wav = torch.randn(2, 1, 20 * 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf.encode(wav)
        codes = tok.encode(wav)
        assert codes.dtype == torch.int64 and torch.equal(codes, ref.audio_codes)
        assert codes.unique().numel() > 8
        decoded = hf.decode(audio_codes=ref.audio_codes).audio_values
        torch.testing.assert_close(tok.decode(codes)[:, 0], decoded, rtol=1e-4, atol=1e-6)
        out = tok(**hf_inputs(tok, {"input_values": wav}))
        torch.testing.assert_close(out.audio[:, 0], hf(wav).audio_values, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(tok.decode(codes[:, :2])[:, 0],
                                   hf.decode(audio_codes=ref.audio_codes[:, :2]).audio_values, rtol=1e-4, atol=1e-6)


def test_dac_checkpoint_gives_identical_codes_and_audio(tmp_path):
    hf = _hf_dac()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tok = load_hf(tmp_path / "hf")
    assert isinstance(tok, DacCodec)
    assert (tok.sample_rate, tok.hop, tok.frame_rate, tok.num_codebooks, tok.codebook_size) == (600, 6, 100, 3, 16)
    _check_same_dac(tok, hf)
    save_hf(tok, tmp_path / "back", max_shard_size="20KB")
    back = transformers.DacModel.from_pretrained(tmp_path / "back").eval()
    for (name, theirs), ours in zip(hf.state_dict().items(), back.state_dict().values()):
        assert torch.equal(theirs, ours), name
    _check_same_dac(tok, back)


def test_dac_pads_to_whole_frames_and_checks_codes(tmp_path):
    _hf_dac().save_pretrained(tmp_path)
    tok = load_hf(tmp_path)
    wav = torch.randn(1, 1, 20, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(wav, (0, 4))
    assert torch.equal(tok.encode(wav), tok.encode(padded)) and tok.encode(wav).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="between 1 and 3 codebooks but got 4"):
        tok.decode(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"values in \[0, 16\)"):
        tok.decode(torch.full((1, 3, 2), 16))
    with pytest.raises(ValueError, match="1 channel"):
        tok.encode(torch.zeros(1, 2, 12))


def test_dac_trains_and_a_padded_batch_equals_its_items():
    """``forward`` with ``lengths`` masks every layer, so a ragged batch equals its items run alone; its loss
    and the reconstruction reach every parameter (the codebooks too)."""
    from omnikit import create_model

    torch.manual_seed(0)
    tok = create_model("dac_tiny")
    wav = torch.randn(2, 1, 9 * tok.hop, generator=torch.Generator().manual_seed(5)) * 0.1
    lengths = torch.tensor([9 * tok.hop, 5 * tok.hop - 3])
    out = tok(wav, lengths)
    assert out.lengths.tolist() == [52, 27]  # the odd ratio decodes 9 frames to 9 * 6 - 2 samples
    alone = tok(wav[1:, :, : 5 * tok.hop - 3])
    torch.testing.assert_close(out.audio[1:, :, : 5 * tok.hop - 3], alone.audio, rtol=1e-4, atol=1e-6)
    assert torch.equal(out.codes[1:, :, :5], alone.codes)
    (out.hidden_states.square().mean() + out.loss).backward()
    assert all(p.grad is not None for p in tok.parameters())


def test_dac_presets_count_as_transformers():
    """The registered published presets have as many parameters as transformers' DacModel on their configs."""
    import omnikit

    published = {"dac_16khz": ([2, 4, 5, 8], 12, 16000), "dac_24khz": ([2, 4, 5, 8], 32, 24000),
                 "dac_44khz": ([2, 4, 8, 8], 9, 44100)}
    for name, (ratios, codebooks, rate) in published.items():
        config = transformers.DacConfig(downsampling_ratios=ratios, n_codebooks=codebooks, sampling_rate=rate)
        with torch.device("meta"):
            reference = transformers.DacModel(config)
        ours = omnikit.create_model(name, device="meta")
        assert omnikit.count_parameters(ours) == sum(p.numel() for p in reference.parameters()), name


def test_created_codec_saves_as_a_transformers_checkpoint(tmp_path):
    """``save_hf`` writes a ``create_model`` codec as a ``DacModel`` checkpoint that codes identically."""
    from omnikit import create_model

    torch.manual_seed(0)
    tok = create_model("dac_tiny").eval()
    save_hf(tok, tmp_path)
    hf = transformers.DacModel.from_pretrained(tmp_path).eval()
    wav = torch.randn(1, 1, 60, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        assert torch.equal(tok.encode(wav), hf.encode(wav).audio_codes)


def test_from_transformers_converts_a_dac_module():
    from omnikit.convert import from_transformers

    hf = _hf_dac()
    _check_same_dac(from_transformers(hf).eval(), hf)
