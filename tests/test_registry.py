"""Registry: names, kinds, wildcards, overrides, meta builds, dtype policy, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import omnikit
from omnikit.registry import _REGISTRY


@pytest.fixture
def scratch_registry():
    """Register test entrypoints and remove them afterwards."""
    before = set(_REGISTRY)
    yield
    for key in set(_REGISTRY) - before:
        del _REGISTRY[key]


def test_list_models_sorted_wildcards_and_kind() -> None:
    names = omnikit.list_models()
    assert names == sorted(names)
    assert "decoder_tiny" in omnikit.list_models("decoder_*")
    assert all(n.startswith("qwen3_") for n in omnikit.list_models("qwen3_*"))
    assert "decoder_tiny" in omnikit.list_models(kind="decoder")
    assert "decoder_tiny" not in omnikit.list_models(kind="codec")


def test_list_models_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="`kind` expected one of"):
        omnikit.list_models(kind="decoders")


def test_kinds_cover_the_contract() -> None:
    required = {"audio_encoder", "codec", "frame_encoder", "temporal", "moe", "adapter", "decoder", "talker", "omni"}
    assert required <= set(omnikit.KINDS)


def test_unknown_name_lists_closest_matches() -> None:
    with pytest.raises(KeyError) as info:
        omnikit.create_model("decoder_tinyy")
    assert "decoder_tiny" in str(info.value)


def test_unknown_override_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="depht"):
        omnikit.create_model("decoder_tiny", depht=3)


def test_overrides_apply_and_are_recorded() -> None:
    model = omnikit.create_model("decoder_tiny", depth=3, dim=32, num_heads=2, num_kv_heads=1)
    assert len(model.decoder.blocks) == 3
    assert model.omnikit_spec.overrides == {"depth": 3, "dim": 32, "num_heads": 2, "num_kv_heads": 1}
    assert model.omnikit_spec.kind == "decoder"


def test_meta_build_allocates_nothing_and_counts_parameters() -> None:
    model = omnikit.create_model("qwen3_0_6b", device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    # published Qwen3-0.6B: 0.6B total (596,049,920 with tied embeddings)
    assert omnikit.count_parameters(model) == 596_049_920


def test_dtype_keeps_norms_and_rotary_fp32() -> None:
    model = omnikit.create_model("decoder_tiny", dtype=torch.bfloat16)
    assert model.embed.weight.dtype == torch.bfloat16
    assert model.decoder.norm.weight.dtype == torch.float32
    assert model.decoder.blocks[0].attn.q_norm.weight.dtype == torch.float32
    assert model.decoder.rotary.inv_freq.dtype == torch.float32
    logits = model(torch.randint(0, 256, (1, 5)))
    assert logits.dtype == torch.bfloat16


def test_register_duplicate_and_bad_kind(scratch_registry) -> None:
    @omnikit.register_model(kind="adapter")
    def scratch_adapter(width: int = 4) -> nn.Module:
        return nn.Linear(width, width)

    with pytest.raises(ValueError, match="already registered"):
        omnikit.register_model(kind="adapter", name="scratch_adapter")(lambda: nn.Identity())
    with pytest.raises(ValueError, match="`kind` expected one of"):
        omnikit.register_model(kind="nonsense", name="scratch_x")(lambda: nn.Identity())
    # explicit-signature entrypoints get their overrides checked by the registry
    assert omnikit.create_model("scratch_adapter", width=3).weight.shape == (3, 3)
    with pytest.raises(TypeError, match="widht"):
        omnikit.create_model("scratch_adapter", widht=3)
    assert omnikit.model_info("scratch_adapter").kind == "adapter"


def test_bare_decorator_registers_custom_kind(scratch_registry) -> None:
    @omnikit.register_model
    def scratch_custom() -> nn.Module:
        """A scratch model."""
        return nn.Identity()

    info = omnikit.model_info("scratch_custom")
    assert info.kind == "custom" and info.description == "A scratch model."


def test_entrypoint_must_return_a_module(scratch_registry) -> None:
    omnikit.register_model(name="scratch_bad")(lambda: 3)
    with pytest.raises(TypeError, match=r"expected an nn\.Module"):
        omnikit.create_model("scratch_bad")


def test_every_family_registers_in_its_presets_module() -> None:
    """One preset convention: registrations live in ``<family>/presets.py`` (the tiny omni assemblies
    and adapters in ``fusion/models.py``, whose ``TINY_TOKENS`` is public)."""
    homes = {omnikit.model_info(name).entrypoint.__module__ for name in omnikit.list_models()}
    assert homes == {"omnikit.fusion.models"} | {
        f"omnikit.{family}.presets" for family in ("audio", "vision", "video", "moe", "models", "speech", "fusion")}
