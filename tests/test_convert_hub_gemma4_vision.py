"""Gemma 4's vision tower: a tiny random transformers ``Gemma4ForConditionalGeneration`` with a vision
config (norms, position table and standardisation randomised), saved in shards; load_hf's part
``"vision_encoder"`` gives transformers' image soft tokens (tower + embedder) for a batch of two
images of different aspect ratios (one padded)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

S, F = "sliding_attention", "full_attention"
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, global_head_dim=16, sliding_window=4, layer_types=[S, F],
            hidden_size_per_layer_input=0)
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=8, patch_size=2, position_embedding_size=16, pooling_kernel_size=2, standardize=True)


def _hf_model():
    torch.manual_seed(0)
    config = transformers.Gemma4Config(text_config=TEXT, vision_config=VISION, audio_config=None,
                                       image_token_id=60, boi_token_id=62, eoi_token_id=63)
    model = transformers.Gemma4ForConditionalGeneration(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "vision" not in name or "inv_freq" in name:
                continue
            if "norm" in name or "std_scale" in name:
                tensor.copy_(1 + 0.3 * torch.randn(tensor.shape, generator=g))
            elif "position_embedding_table" in name or "std_bias" in name:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=g))
    return model.eval()


def _grid(width: int, height: int, total: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    positions = torch.full((total, 2), -1, dtype=torch.long)
    positions[: width * height] = torch.stack((xs.flatten(), ys.flatten()), dim=-1)
    return positions


def _inputs():
    g = torch.Generator().manual_seed(2)
    pixels = torch.rand(2, 24, 12, generator=g)
    positions = torch.stack((_grid(6, 4, 24), _grid(4, 4, 24)))  # 6 and 4 soft tokens; the second padded
    pixels[1, 16:] = 0
    return {"pixel_values": pixels, "image_position_ids": positions}


def test_vision_tower_loads_with_transformers_outputs(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    tower = load_hf(tmp_path / "hf", part="vision_encoder")
    inputs = _inputs()
    with torch.no_grad():
        ref = torch.cat(hf.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output)
        out = tower(**hf_inputs(tower, inputs))
    assert out.lengths.tolist() == [6, 4]
    ours = out.hidden_states[out.mask]
    assert (ours - ref).abs().max() / ref.abs().max() <= 1e-4
    save_hf(tower, tmp_path / "back")
    again = load_hf(tmp_path / "back", part="vision_encoder")
    with torch.no_grad():
        assert torch.equal(again(**hf_inputs(again, inputs)).hidden_states, out.hidden_states)


def test_vision_config_options_are_refused_by_name():
    from omnikit.convert.hub_gemma4 import vision_config_from_hf

    for key, value in (("use_clipped_linears", True), ("hidden_activation", "silu"),
                       ("rope_parameters", {"rope_type": "default", "rope_theta": 100.0})):
        with pytest.raises(ValueError, match=key):
            vision_config_from_hf({**VISION, key: value})
