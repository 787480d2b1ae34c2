"""save_pretrained / load_pretrained: safetensors + config.json, strictness, pickle refusal."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import omnikit


def test_roundtrip_rebuilds_with_overrides(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny", depth=3, tie_embeddings=True).eval()
    omnikit.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["name"] == "decoder_tiny" and config["overrides"] == {"depth": 3, "tie_embeddings": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = omnikit.load_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.embed.weight, "tied weights must stay tied"
    ids = torch.randint(0, 256, (2, 7))
    assert torch.equal(model(ids), loaded(ids))


def test_tied_weights_are_stored_once(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny", tie_embeddings=True)
    omnikit.save_pretrained(model, tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert ("lm_head.weight" in stored) != ("embed.weight" in stored)


def test_create_model_with_pretrained_and_dtype(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny")
    omnikit.save_pretrained(model, tmp_path)
    again = omnikit.create_model("decoder_tiny", pretrained=tmp_path / "model.safetensors", dtype=torch.bfloat16)
    assert again.embed.weight.dtype == torch.bfloat16
    torch.testing.assert_close(again.embed.weight.float(), model.embed.weight, atol=1e-2, rtol=1e-2)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny")
    omnikit.save_pretrained(model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("decoder.norm.weight")
    state["extra.weight"] = torch.zeros(1)
    state["embed.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as info:
        omnikit.load_pretrained(tmp_path)
    message = str(info.value)
    assert "decoder.norm.weight" in message and "extra.weight" in message and "embed.weight" in message


def test_mismatched_overrides_fail_strictly(tmp_path) -> None:
    omnikit.save_pretrained(omnikit.create_model("decoder_tiny", depth=3), tmp_path)
    with pytest.raises(ValueError, match="unexpected keys"):
        omnikit.create_model("decoder_tiny", pretrained=tmp_path)


def test_pickle_refused_unless_opted_in(tmp_path) -> None:
    model = omnikit.create_model("decoder_tiny")
    omnikit.save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        omnikit.load_pretrained(tmp_path)
    loaded = omnikit.load_pretrained(tmp_path, allow_pickle=True)
    assert torch.equal(loaded.embed.weight, model.embed.weight)


def test_save_requires_registry_model_and_json_overrides(tmp_path) -> None:
    with pytest.raises(ValueError, match="create_model"):
        omnikit.save_pretrained(nn.Linear(2, 2), tmp_path)
    model = omnikit.create_model("decoder_tiny")
    model.omnikit_spec.overrides["dim"] = torch.tensor(3)
    with pytest.raises(TypeError, match=r"overrides\.dim"):
        omnikit.save_pretrained(model, tmp_path)


def test_meta_model_cannot_be_saved_or_loaded_into(tmp_path) -> None:
    with pytest.raises(ValueError, match="meta"):
        omnikit.save_pretrained(omnikit.create_model("decoder_tiny", device="meta"), tmp_path)
    omnikit.save_pretrained(omnikit.create_model("decoder_tiny"), tmp_path)
    with pytest.raises(ValueError, match="meta"):
        omnikit.load_pretrained(tmp_path, device="meta")


def test_missing_files_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        omnikit.load_pretrained(tmp_path)
