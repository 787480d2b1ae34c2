"""Gemma 4's audio tower: a tiny random transformers ``Gemma4ForConditionalGeneration`` with an audio
config (clip bounds, norms, per-dim scales randomised so they bite), saved in shards; load_hf's part
``"audio_encoder"`` gives transformers' audio soft tokens (tower + embedder) on a padded batch, and
save_hf writes the tensors back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

S, F = "sliding_attention", "full_attention"
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, global_head_dim=16, sliding_window=4, layer_types=[S, F],
            hidden_size_per_layer_input=0)
AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, subsampling_conv_channels=[16, 8],
             output_proj_dims=24, attention_chunk_size=4, attention_context_left=6, attention_logit_cap=2.0)


def _hf_model(**audio):
    torch.manual_seed(0)
    config = transformers.Gemma4Config(text_config=TEXT, audio_config={**AUDIO, **audio}, vision_config=None,
                                       audio_token_id=61, boa_token_id=59, eoa_token_index=58)
    model = transformers.Gemma4ForConditionalGeneration(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "audio" not in name:
                continue
            if "norm" in name:
                tensor.copy_(1 + 0.3 * torch.randn(tensor.shape, generator=g))
            elif "per_dim_scale" in name or "bias" in name:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=g))
            elif name.endswith(("input_min", "output_min")):
                tensor.fill_(-0.5 - float(torch.rand((), generator=g)))
            elif name.endswith(("input_max", "output_max")):
                tensor.fill_(0.5 + float(torch.rand((), generator=g)))
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 37, 16, generator=g)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 23:] = False
    return {"input_features": features, "input_features_mask": mask}


def _reference(hf, inputs):
    with torch.no_grad():
        out = hf.model.get_audio_features(inputs["input_features"], inputs["input_features_mask"])
    return out.pooler_output, out.attention_mask


@pytest.mark.parametrize("clipped", [True, False])
def test_audio_tower_loads_with_transformers_outputs(tmp_path, clipped):
    hf = _hf_model(use_clipped_linears=clipped)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tower = load_hf(tmp_path / "hf", part="audio_encoder")
    inputs = _inputs()
    ref, mask = _reference(hf, inputs)
    with torch.no_grad():
        out = tower(**hf_inputs(tower, inputs))
    assert torch.equal(out.mask, mask)
    error = (out.hidden_states[mask] - ref[mask]).abs().max() / ref[mask].abs().max()
    assert error <= 1e-4
    if clipped:  # the bounds bite: the same tower without them differs
        with torch.no_grad():
            for module in tower.modules():
                if getattr(module, "clipped", False):
                    module.clipped = False
            assert (tower(**hf_inputs(tower, inputs)).hidden_states[mask] - ref[mask]).abs().max() > 1e-2
    save_hf(load_hf(tmp_path / "hf", part="audio_encoder"), tmp_path / "back")
    again = load_hf(tmp_path / "back", part="audio_encoder")
    with torch.no_grad():
        assert torch.equal(again(**hf_inputs(again, inputs)).hidden_states, out.hidden_states)


def test_audio_outputs_never_depend_on_later_frames(tmp_path):
    _hf_model().save_pretrained(tmp_path)
    tower = load_hf(tmp_path, part="audio_encoder")
    inputs = _inputs()
    changed = {**inputs, "input_features": inputs["input_features"].clone()}
    changed["input_features"][:, 24:] += 1.0
    with torch.no_grad():
        a = tower(**hf_inputs(tower, inputs)).hidden_states
        b = tower(**hf_inputs(tower, changed)).hidden_states
    # token t reads input frames up to 4t + 3 (the two stride-2 convs): tokens 0..4 never see frame 24
    assert torch.equal(a[:, :5], b[:, :5]) and not torch.equal(a[:, 6:], b[:, 6:])


def test_audio_config_options_are_refused_by_name():
    from omnikit.convert.hub_gemma4 import audio_config_from_hf

    for key, value in (("attention_context_right", 2), ("hidden_act", "gelu"), ("rms_norm_eps", 1e-5),
                       ("subsampling_conv_channels", [8, 8, 8])):
        with pytest.raises(ValueError, match=key):
            audio_config_from_hf({**AUDIO, key: value})


def test_long_audio_in_chunks_equals_one_pass(tmp_path):
    _hf_model().save_pretrained(tmp_path)
    tower = load_hf(tmp_path, part="audio_encoder")
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 16, 301, generator=g)
    lengths = torch.tensor([301, 190])
    with torch.no_grad():
        full = tower(features, lengths)
    chunked = tower.encode_long(features, lengths, chunk_frames=40)
    assert tower.history_frames < 301 - 40  # chunks really cut the receptive field's reach
    assert torch.equal(chunked.lengths, full.lengths)
    assert torch.allclose(chunked.hidden_states, full.hidden_states, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="chunk_frames"):
        tower.encode_long(features, lengths, chunk_frames=42)
