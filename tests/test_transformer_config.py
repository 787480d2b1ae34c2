"""One nested :class:`TransformerConfig` in every config that used to retype the transformer's fields.

The flat keywords (``dim=``, ``depth=``, ``sliding_window=`` ...) keep working everywhere: constructors,
``dataclasses.replace``, ``create_model`` overrides, and ``config.json`` files written with them
(the older layout), which load to the same outputs as the nested layout.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import omnikit
from omnikit.audio.aut import AuTEncoderConfig
from omnikit.audio.code2wav import Code2WavConfig
from omnikit.audio.mimi import MimiConfig
from omnikit.audio.wav2vec2 import Wav2Vec2Config
from omnikit.audio.whisper import WhisperEncoderConfig
from omnikit.audio.windowed import WindowedAudioEncoderConfig
from omnikit.layers import TransformerConfig
from omnikit.testing.contract import primary_output
from omnikit.utils.config import flat_names
from omnikit.video.temporal.factorized import FactorizedConfig
from omnikit.video.temporal.qformer import QFormerConfig
from omnikit.video.temporal.resampler import ResamplerConfig
from omnikit.video.temporal.spacetime import SpaceTimeConfig
from omnikit.video.temporal.transformer import TemporalTransformerConfig
from omnikit.vision.qwen3_vit import Qwen3ViTConfig
from omnikit.vision.video_vit import VideoViTConfig
from omnikit.vision.window_vit import WindowViTConfig

#: (registered tiny model, its config class, a flat override of a transformer field, the nested field it sets)
CASES = [
    ("whisper_encoder_tiny", WhisperEncoderConfig, {"depth": 1}, ("depth", 1)),
    ("qwen2_5_omni_audio_tiny", WindowedAudioEncoderConfig, {"n_window": 2}, ("window", 2)),
    ("qwen3_omni_aut_tiny", AuTEncoderConfig, {"num_heads": 4}, ("num_heads", 4)),
    ("mimi_tiny", MimiConfig, {"sliding_window": 3}, ("window", 3)),
    ("code2wav_tiny", Code2WavConfig, {"sliding_window": 2}, ("window", 2)),
    ("qwen2_5_omni_vision_tiny", WindowViTConfig, {"mlp_hidden": 24}, ("mlp_hidden", 24)),
    ("qformer_tiny", QFormerConfig, {"num_heads": 4}, ("num_heads", 4)),
    ("perceiver_resampler_tiny", ResamplerConfig, {"depth": 1}, ("depth", 1)),
    ("vivit_factorized_tiny", FactorizedConfig, {"spatial_depth": 1}, ("depth", 1)),
    ("temporal_transformer_tiny", TemporalTransformerConfig, {"mlp_ratio": 2.0}, ("mlp_ratio", 2.0)),
    ("timesformer_tiny", SpaceTimeConfig, {"depth": 1}, ("depth", 1)),
    ("qwen3_vit_tiny", Qwen3ViTConfig, {"mlp_hidden": 24}, ("mlp_hidden", 24)),
    ("video_vit_tiny", VideoViTConfig, {"mlp_ratio": 2.0}, ("mlp_ratio", 2.0)),
    ("wav2vec2_tiny", Wav2Vec2Config, {"depth": 1}, ("depth", 1)),
]


def _config(model: torch.nn.Module) -> object:
    """The model's config (the Perceiver resampler takes its fields as arguments: rebuilt from them)."""
    return getattr(model, "config", None)


@pytest.mark.parametrize("config_cls", sorted({c[1] for c in CASES}, key=lambda c: c.__name__))
def test_config_nests_one_transformer_config_and_reads_its_flat_keywords(config_cls):
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert "transformer" in fields
    assert not fields & flat_names(config_cls), "a flat keyword must not be a field of its own any more"
    flat = {name: ("transformer", name) for name in ("dim", "depth", "num_heads")} | config_cls.flat_fields
    required = {"dim": 32, "depth": 2, "num_heads": 4} if config_cls is not FactorizedConfig else {
        "dim": 32, "spatial_depth": 2, "num_heads": 4, "temporal_depth": 1}
    if config_cls is Qwen3ViTConfig:
        required |= {"mlp_hidden": 48, "out_dim": 16}
    config = config_cls(**required)
    assert isinstance(config.transformer, TransformerConfig)
    for name, (outer, inner) in config_cls.flat_fields.items():
        assert getattr(config, name) == getattr(getattr(config, outer), inner), name
    nested = config_cls(**{k: v for k, v in required.items() if k not in flat},
                        transformer=config.transformer)
    assert nested == config
    key = next(k for k in ("depth", "spatial_depth") if k in config_cls.flat_fields)
    assert dataclasses.replace(config, **{key: 5}).transformer.depth == 5


@pytest.mark.parametrize(("name", "config_cls", "flat", "nested"), CASES, ids=[c[0] for c in CASES])
def test_flat_and_nested_overrides_build_the_same_model(name, config_cls, flat, nested):
    inner, value = nested
    torch.manual_seed(0)
    by_flat = omnikit.create_model(name, **flat)
    torch.manual_seed(0)
    by_nested = omnikit.create_model(name, transformer={inner: value})
    config = _config(by_flat)
    if config is not None:
        assert getattr(config.transformer, inner) == value
        assert config == _config(by_nested)
    assert all(torch.equal(a, b) for a, b in zip(by_flat.state_dict().values(), by_nested.state_dict().values()))


@pytest.mark.parametrize(("name", "config_cls", "flat", "nested"), CASES, ids=[c[0] for c in CASES])
def test_old_flat_config_json_loads_to_the_same_outputs(tmp_path, name, config_cls, flat, nested):
    """A checkpoint whose config.json holds the flat overrides (what earlier versions wrote) loads to
    the same outputs, and so does the same checkpoint with the overrides in the nested layout."""
    torch.manual_seed(0)
    model = omnikit.create_model(name, **flat).eval()
    omnikit.save_pretrained(model, tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["overrides"] == flat  # the old, flat layout
    kwargs = model.contract_inputs([12, 9], seed=1).kwargs
    with torch.no_grad():
        expected = primary_output(model(**kwargs))[0]
        old = primary_output(omnikit.load_pretrained(tmp_path).eval()(**kwargs))[0]
        path.write_text(json.dumps({**saved, "overrides": {"transformer": {nested[0]: nested[1]}}}))
        new = primary_output(omnikit.load_pretrained(tmp_path).eval()(**kwargs))[0]
    assert torch.equal(old, expected) and torch.equal(new, expected)


def test_nested_overrides_are_saved_and_validated(tmp_path):
    model = omnikit.create_model("mimi_tiny", transformer={"window": 4}).eval()
    omnikit.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["overrides"] == {"transformer": {"window": 4}}
    assert omnikit.load_pretrained(tmp_path).config == model.config
    with pytest.raises(ValueError, match="window"):
        omnikit.create_model("mimi_tiny", sliding_window=-1)
    with pytest.raises(TypeError, match="depth"):
        omnikit.create_model("whisper_encoder_tiny", depth="two")
    with pytest.raises(TypeError, match="rope_base"):  # Whisper has no rotary: not one of its flat keywords
        omnikit.create_model("whisper_encoder_tiny", rope_base=10.0)
