"""transformers' Wav2Vec2Model / Wav2Vec2ForCTC checkpoints load as omnikit audio encoders on raw waveforms: hidden
states equal at float32 rounding for the base (group norm, post-LN) and large (layer norm, pre-LN) layouts, with and
without padding, and ``save_hf`` writes what ``from_pretrained`` reads back."""

from __future__ import annotations

import pytest
import torch
from references import randomise_norms_and_biases
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from omnikit.audio.wav2vec2 import Wav2Vec2Encoder  # noqa: E402
from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

LAYOUTS = {"base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
           "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)}


def _hf_wav2vec2(layout: str, cls: str = "Wav2Vec2Model") -> torch.nn.Module:
    """A tiny wav2vec 2.0 (hop 4, width 16, 2 layers, an even positional kernel) with randomised norms,
    biases and weight-norm gains."""
    config = transformers.Wav2Vec2Config(
        conv_dim=[8, 8], conv_kernel=[3, 2], conv_stride=[2, 2], hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
        vocab_size=12, attn_implementation="eager", **LAYOUTS[layout],
    )
    torch.manual_seed(0)
    model = randomise_norms_and_biases(getattr(transformers, cls)(config))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("original0"):
                param.uniform_(0.5, 1.5)
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two clips of 61 and 40 samples (15 and 9 frames), the second zero-padded, and their attention mask."""
    wav = torch.randn(2, 61, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 61, dtype=torch.long)
    mask[1, 40:] = 0
    return wav.masked_fill(mask == 0, 0), mask


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _check_same_encoder(enc: Wav2Vec2Encoder, hf: torch.nn.Module) -> None:
    wav, mask = _batch()
    with torch.no_grad():
        # no mask: the base models' feature extractor returns none, so the padded batch is coded as given
        out = enc(**hf_inputs(enc, {"input_values": wav}))
        ref = hf(wav).last_hidden_state
        assert out.lengths.tolist() == [15, 15] and _rel_err(out.hidden_states, ref) < 1e-5
        # with the mask: valid frames equal transformers', padded frames zero
        out = enc(**hf_inputs(enc, {"input_values": wav, "attention_mask": mask}))
        ref = hf(wav, attention_mask=mask).last_hidden_state
        assert out.lengths.tolist() == [15, 9]
        for b, n in enumerate(out.lengths.tolist()):
            assert _rel_err(out.hidden_states[b, :n], ref[b, :n]) < 1e-5
        assert not out.hidden_states[1, 9:].any()


@pytest.mark.parametrize("layout", ["base", "large"])
def test_wav2vec2_checkpoint_gives_equal_hidden_states(tmp_path, layout):
    hf = _hf_wav2vec2(layout)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    enc = load_hf(tmp_path / "hf")
    assert isinstance(enc, Wav2Vec2Encoder) and enc.config.stable_layer_norm == (layout == "large")
    _check_same_encoder(enc, hf)
    save_hf(enc, tmp_path / "back", max_shard_size="20KB")
    back = transformers.Wav2Vec2Model.from_pretrained(tmp_path / "back", attn_implementation="eager").eval()
    theirs = hf.state_dict()
    for name, tensor in back.state_dict().items():
        assert name == "masked_spec_embed" or torch.equal(tensor, theirs[name]), name
    _check_same_encoder(enc, back)


@pytest.mark.parametrize("cls", ["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"])
def test_wav2vec2_for_ctc_loads_its_encoder_and_old_weight_norm_names(tmp_path, cls):
    """The ``wav2vec2.`` encoder of CTC and pretraining checkpoints loads (heads, quantizer left out), also from a
    checkpoint that spells the positional conv's weight norm ``weight_g`` / ``weight_v``."""
    hf = _hf_wav2vec2("large", cls)
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                            "weight_v"): v for k, v in state.items()}
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in old and len(old) > len(hf.wav2vec2.state_dict())
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    enc = load_hf(tmp_path)
    _check_same_encoder(enc, hf.wav2vec2)


@pytest.mark.parametrize("layout", ["base", "large"])
def test_wav2vec2_padding_is_invisible_with_masked_group_norm(layout):
    """omnikit's default (``mask_group_norm=True``): with ``lengths`` a padded batch equals its items alone, in
    both layouts (transformers' base models instead normalise over the padding)."""
    from omnikit.audio.wav2vec2 import Wav2Vec2Config

    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(Wav2Vec2Config(
        conv_channels=(8, 8), conv_kernels=(3, 2), conv_strides=(2, 2), dim=16, depth=2, num_heads=2,
        mlp_hidden=32, pos_kernel=4, pos_groups=2, feat_norm="group" if layout == "base" else "layer",
        conv_bias=layout == "large", stable_layer_norm=layout == "large")).eval()
    wav, mask = _batch()
    with torch.no_grad():
        out = enc(wav, mask.sum(-1))
        alone = enc(wav[1:, :40])
    torch.testing.assert_close(out.hidden_states[1, :9], alone.hidden_states[0], rtol=1e-4, atol=1e-5)


def test_wav2vec2_presets_count_as_transformers():
    import omnikit

    published = {"wav2vec2_base": {},
                 "wav2vec2_large_lv60": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                             intermediate_size=4096, **LAYOUTS["large"])}
    for name, values in published.items():
        with torch.device("meta"):
            reference = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(mask_time_prob=0.0, **values))
        ours = omnikit.create_model(name, device="meta")
        assert omnikit.count_parameters(ours) == sum(p.numel() for p in reference.parameters()), name


def test_created_encoder_saves_as_a_transformers_checkpoint(tmp_path):
    """``save_hf`` writes a ``create_model`` encoder as a ``Wav2Vec2Model`` checkpoint (config from omnikit's)."""
    import omnikit

    torch.manual_seed(0)
    enc = omnikit.create_model("wav2vec2_tiny").eval()
    save_hf(enc, tmp_path)
    hf = transformers.Wav2Vec2Model.from_pretrained(tmp_path, attn_implementation="eager").eval()
    wav = torch.randn(2, 61, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _rel_err(enc(wav).hidden_states, hf(wav).last_hidden_state) < 1e-5


def test_from_transformers_converts_a_wav2vec2_module():
    from omnikit.convert import from_transformers

    hf = _hf_wav2vec2("base")
    wav = torch.randn(2, 61, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert _rel_err(from_transformers(hf)(wav).hidden_states, hf(wav).last_hidden_state) < 1e-5


def test_wav2vec2_bad_input_names_the_argument():
    import omnikit

    enc = omnikit.create_model("wav2vec2_tiny").eval()
    with pytest.raises(ValueError, match=r"`wav` expected at least 5 samples \(one frame\) but got shape \(1, 4\)"):
        enc(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="`wav` expected 1 channel"):
        enc(torch.zeros(1, 2, 64))
    with pytest.raises(ValueError, match="`lengths`"):
        enc(torch.zeros(2, 64), lengths=torch.tensor([64, 65]))
