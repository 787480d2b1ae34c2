"""Config maps: config.json <-> omnikit config, both directions from one declaration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Fixed, Nested, Refuse, Same
from omnikit.layers.decoder import DecoderConfig


@dataclass(frozen=True)
class Block:
    dim: int
    heads: int
    head_dim: int
    gated: bool
    bias: bool
    out_bias: bool
    chunks: int
    theta: float


BLOCK = ConfigMap((
    Refuse("act", ("silu", "swish")), Field("dim", "hidden_size"), Field("heads", "num_heads"),
    Derived("head_dim", "head_dim", lambda f: f["dim"] // f["heads"]), Fixed("gated", True),
    Field("bias", "attention_bias", False, bool), Same("out_bias", "bias"),
    Convert("chunks", "window", lambda v, f: v // f["dim"], lambda v, f: v * f["dim"], default=64),
    Field("theta", "rope.theta", 10000.0, float, fallbacks=("rope_theta",)), Constant("model_type", "block"),
), target=Block)


def test_read_fills_defaults_derived_fields_and_fallbacks():
    block = BLOCK({"hidden_size": 32, "num_heads": 4, "rope_theta": 500})
    assert block == Block(dim=32, heads=4, head_dim=8, gated=True, bias=False, out_bias=False, chunks=2, theta=500.0)
    assert BLOCK({"hidden_size": 32, "num_heads": 4, "head_dim": 16, "rope": {"theta": 7}}).head_dim == 16


def test_write_inverts_read():
    config = {"act": "silu", "hidden_size": 32, "num_heads": 4, "head_dim": 16, "attention_bias": True, "window": 96,
              "rope": {"theta": 7.0}, "model_type": "block"}
    assert BLOCK.write(BLOCK(config)) == config


def test_refused_and_absent_options_name_the_key():
    with pytest.raises(ValueError, match=r"act='gelu' is not supported; expected one of \['silu', 'swish'\]"):
        BLOCK({"hidden_size": 32, "num_heads": 4, "act": "gelu"})
    with pytest.raises(ValueError, match=r"config.json expected 'num_heads'"):
        BLOCK({"hidden_size": 32})


def test_write_refuses_configs_of_another_layout():
    block = BLOCK({"hidden_size": 32, "num_heads": 4})
    assert BLOCK.write({**block.__dict__, "gated": False}) is None
    assert BLOCK.write({**block.__dict__, "out_bias": True}) is None


def test_nested_sub_configs_round_trip():
    outer = ConfigMap((Field("width", "width"), Nested("block", "block_config", BLOCK)))
    config = {"width": 3, "block_config": {"hidden_size": 32, "num_heads": 4}}
    fields = outer(config)
    assert fields["block"].head_dim == 8
    assert outer.write(fields)["block_config"]["head_dim"] == 8
    assert outer.read(outer.write(fields)) == fields


def test_qwen_maps_export_what_they_load():
    from omnikit.convert.hub_qwen import QWEN2, QWEN3

    published = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96,
                 "vocab_size": 128, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    qwen3 = QWEN3(published)
    assert qwen3 == DecoderConfig(dim=64, depth=2, num_heads=4, num_kv_heads=4, head_dim=16, mlp_hidden=96,
                                  norm_eps=1e-6, qk_norm=True, rope_base=1e6, vocab_size=128)
    assert QWEN3(QWEN3.write(qwen3)) == qwen3
    assert QWEN2.write(qwen3) is None  # qk-norm: not a Qwen2 layout
    with pytest.raises(ValueError, match=r"rope_parameters.rope_type='yarn' is not supported"):
        QWEN3({**published, "rope_parameters": {"rope_type": "yarn"}})
    with pytest.raises(ValueError, match="use_sliding_window=True is not supported"):
        QWEN2({**published, "use_sliding_window": True})


def test_one_registry_serves_load_hf_and_from_transformers():
    import omnikit.convert as convert
    from omnikit.convert import architectures

    assert not hasattr(convert, "_CONVERTER_MODULES")
    classes = architectures.supported_transformers_classes()
    assert {"WhisperEncoder", "Qwen3DecoderLayer", "Qwen3MoeSparseMoeBlock", "Qwen2_5OmniAudioEncoder"} <= set(classes)
    assert classes == convert.supported_transformers_classes()


@dataclass(frozen=True)
class Codes:
    codebooks: int
    delays: tuple[int, ...]
    unused: str
    theta: float


def test_rules_may_depend_on_the_fields_read_before_them():
    """``Fixed`` / ``Constant`` take functions of the fields; ``Fixed(checked=False)`` fits any value on
    write; ``Refuse(default=)`` refuses an absent option; a ``Convert`` writing ``None`` leaves its key out."""
    cmap = ConfigMap((
        Refuse("interleaved", (True,), label="rope.interleaved", default=False), Field("codebooks", "num_codebooks"),
        Fixed("delays", lambda f: (0,) + (1,) * (f["codebooks"] - 1)), Fixed("unused", "a", checked=False),
        Convert("theta", "rope_theta", lambda v, f: float(v), lambda v, f: None, 10.0),
        Constant("depth.num_codebooks", lambda f: f["codebooks"]),
    ), target=Codes)
    codes = cmap({"num_codebooks": 3, "interleaved": True})
    assert codes == Codes(3, (0, 1, 1), "a", 10.0)
    assert cmap.write(Codes(3, (0, 1, 1), "b", 5.0)) == {"interleaved": True, "num_codebooks": 3,
                                                          "depth": {"num_codebooks": 3}}
    assert cmap.write(Codes(3, (0, 0, 0), "a", 5.0)) is None
    with pytest.raises(ValueError, match=r"rope.interleaved=False is not supported; expected True"):
        cmap({"num_codebooks": 3})


def test_write_reads_the_flat_keywords_of_a_nested_config():
    from omnikit.audio.mimi import MimiConfig
    from omnikit.convert.hub_mimi import MIMI

    config = MimiConfig(dim=16, depth=2, num_heads=2, num_kv_heads=2, head_dim=8, sliding_window=5)
    written = MIMI.write(config)
    assert written["hidden_size"] == 16 and written["sliding_window"] == 5 and MIMI(written) == config
