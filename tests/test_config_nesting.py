"""The last configs that retyped transformer fields now reuse them (issue 22).

``DecoderConfig`` shares :class:`TransformerShape` (its six size fields) with ``TransformerConfig`` by
inheritance, so its fields and its ``config.json`` are unchanged. The DiT, hierarchy, Qwen3-Omni Talker
(with its code predictor) and Gemma 4 text / vision / audio configs nest a ``TransformerConfig``; their
flat keywords keep working, and a ``config.json`` in the old flat layout loads to the same outputs as
one in the nested layout.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import omnikit
from omnikit.audio.gemma4 import Gemma4AudioConfig
from omnikit.audio.token2wav import Token2WavConfig
from omnikit.audio.token2wav_dit import DiTConfig
from omnikit.layers.decoder import DecoderConfig
from omnikit.layers.transformer_config import TransformerConfig, TransformerShape
from omnikit.models.gemma4 import Gemma4Config
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalkerConfig
from omnikit.testing.contract import primary_output
from omnikit.utils.config import flat_names
from omnikit.video.hierarchy import HierarchyConfig
from omnikit.vision.gemma4 import Gemma4VisionConfig

#: DecoderConfig's fields in the order (and so the config.json layout) they had before the shared base.
DECODER_FIELDS = ("dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "mlp", "norm", "norm_eps",
                  "qk_norm", "qkv_bias", "rope_base", "mrope_sections", "mrope_interleaved", "sliding_window",
                  "attention_chunk", "backend", "vocab_size", "tie_embeddings", "out_bias", "rotary_dim",
                  "attn_output_gate")


def test_decoder_and_transformer_configs_share_their_sizes_and_keep_their_fields():
    shape = tuple(f.name for f in dataclasses.fields(TransformerShape))
    assert issubclass(DecoderConfig, TransformerShape) and issubclass(TransformerConfig, TransformerShape)
    assert tuple(f.name for f in dataclasses.fields(DecoderConfig)) == DECODER_FIELDS
    assert tuple(f.name for f in dataclasses.fields(TransformerConfig))[:len(shape)] == shape
    assert DecoderConfig(8, 2, 4).rope_base == 1_000_000.0 and TransformerConfig(8, 2, 4).rope_base is None


#: (config class, the keywords it needs, {flat keyword: (nested field, its field)} it must read)
NESTED = [
    (DiTConfig, {}, {"dim": ("transformer", "dim"), "rope_base": ("transformer", "rope_base")}),
    (HierarchyConfig, {"dim": 8}, {"num_heads": ("transformer", "num_heads"), "depth": ("transformer", "depth")}),
    (Qwen3OmniTalkerConfig, {"dim": 16, "depth": 1, "num_heads": 2, "thinker_dim": 8},
     {"predictor_heads": ("predictor", "num_heads"), "head_dim": ("transformer", "head_dim"),
      "predictor_rope_base": ("predictor", "rope_base")}),
    (Gemma4Config, {"dim": 16, "depth": 2, "num_heads": 2, "num_kv_heads": 1, "head_dim": 8, "mlp_hidden": 32,
                    "vocab_size": 64}, {"sliding_window": ("transformer", "window")}),
    (Gemma4VisionConfig, {}, {"mlp_hidden": ("transformer", "mlp_hidden"), "rope_base": ("transformer", "rope_base")}),
    (Gemma4AudioConfig, {}, {"num_heads": ("transformer", "num_heads"), "norm_eps": ("transformer", "norm_eps")}),
]


@pytest.mark.parametrize(("config_cls", "required", "reads"), NESTED, ids=[c[0].__name__ for c in NESTED])
def test_config_nests_transformer_configs_and_reads_its_flat_keywords(config_cls, required, reads):
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert "transformer" in fields and not fields & flat_names(config_cls)
    config = config_cls(**required)
    assert isinstance(config.transformer, TransformerConfig)
    for name, (outer, inner) in config_cls.flat_fields.items():
        assert getattr(config, name) == getattr(getattr(config, outer), inner), name
    for name, (outer, inner) in reads.items():
        assert config_cls.flat_fields[name] == (outer, inner)
    name, (outer, inner) = next(iter(reads.items()))
    value = getattr(config, name)
    value = value * 2 if not isinstance(value, float) else value / 2
    assert getattr(getattr(dataclasses.replace(config, **{name: value}), outer), inner) == value
    assert config_cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config_cls)}) == config


def test_the_code_predictor_runs_at_the_talkers_width():
    config = Qwen3OmniTalkerConfig(dim=16, depth=1, num_heads=2, thinker_dim=8, predictor_depth=1)
    assert config.predictor.dim == 16 and config.predictor.depth == 1
    assert dataclasses.replace(config, dim=24).predictor.dim == 24


def test_gemma4_config_still_requires_its_head_and_mlp_sizes():
    with pytest.raises(TypeError, match="mlp_hidden"):
        Gemma4Config(dim=16, depth=2, num_heads=2, num_kv_heads=1, head_dim=8, vocab_size=64)


#: (registered tiny model, an override in the old flat layout, the same in the nested layout)
LAYOUTS = [
    ("hierarchical_resampler_tiny", {"num_heads": 4}, {"transformer": {"num_heads": 4}}),
    ("qwen3_omni_talker_tiny", {"predictor_depth": 1, "rope_base": 500.0},
     {"predictor": {"depth": 1}, "transformer": {"rope_base": 500.0}}),
    ("gemma4_tiny", {"sliding_window": 3}, {"transformer": {"window": 3}}),
]


@pytest.mark.parametrize(("name", "flat", "nested"), LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_old_flat_and_new_nested_config_json_load_to_the_same_outputs(tmp_path, name, flat, nested):
    torch.manual_seed(0)
    model = omnikit.create_model(name, **flat).eval()
    omnikit.save_pretrained(model, tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["overrides"] == flat
    kwargs = model.contract_inputs([6, 4], seed=1).kwargs
    with torch.no_grad():
        expected = primary_output(model(**kwargs))[0]
        old = omnikit.load_pretrained(tmp_path).eval()
        path.write_text(json.dumps({**saved, "overrides": nested}))
        new = omnikit.load_pretrained(tmp_path).eval()
        assert old.config == new.config == model.config
        assert torch.equal(primary_output(old(**kwargs))[0], expected)
        assert torch.equal(primary_output(new(**kwargs))[0], expected)


def test_token2wav_reads_a_dit_in_the_old_flat_and_the_nested_layout(tmp_path):
    """A ``dit`` mapping with the DiT's former fields (``dim`` ... ``rope_base`` at the top) and one with
    a ``transformer`` mapping give the same config and the same waveform."""
    tiny = omnikit.create_model("token2wav_tiny").config.dit
    old = {f.name: getattr(tiny, f.name) for f in dataclasses.fields(DiTConfig) if f.name != "transformer"}
    old |= {name: getattr(tiny, name) for name in ("dim", "depth", "num_heads", "head_dim", "rope_base")}
    new = {**{k: v for k, v in old.items() if k not in DiTConfig.flat_fields},
           "transformer": dataclasses.asdict(tiny.transformer)}
    vocoder = omnikit.create_model("token2wav_tiny").config.vocoder
    assert Token2WavConfig(dit=old, vocoder=vocoder).dit == Token2WavConfig(dit=new, vocoder=vocoder).dit == tiny
    models = []
    for dit in (old, new):
        torch.manual_seed(0)
        models.append(omnikit.create_model("token2wav_tiny", dit=dit).eval())
    kwargs = models[0].contract_inputs([5, 3], seed=2).kwargs
    with torch.no_grad():
        outs = [primary_output(m(**kwargs))[0] for m in models]
    assert torch.equal(outs[0], outs[1])
