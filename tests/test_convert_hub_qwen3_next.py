"""Qwen3-Next / Qwen3.5 / Qwen3.5-MoE hybrid causal LMs: tiny random transformers models (randomised
norms, A_log, dt_bias, gates and biases) saved in shards load with transformers' logits on a
left-padded batch, round-trip through save_hf -> from_pretrained, and decode like ``generate``."""

from __future__ import annotations

import json

import pytest
import torch
from references import (
    assert_loads_and_round_trips,
    greedy_reference,
    left_padded_batch,
    max_rel_error,
    randomise_hybrid,
)
from safetensors import safe_open
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

VOCAB = 64
ARCHITECTURES = ("Qwen3NextForCausalLM", "Qwen3_5ForCausalLM", "Qwen3_5MoeForCausalLM")


def _config(architecture: str, **extra):
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                  linear_key_head_dim=8, linear_value_head_dim=8, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25})
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24)
    if architecture == "Qwen3NextForCausalLM":
        return transformers.Qwen3NextConfig(intermediate_size=40, **moe, **common, **extra)
    if architecture == "Qwen3_5ForCausalLM":
        return transformers.Qwen3_5TextConfig(intermediate_size=40, **common, **extra)
    return transformers.Qwen3_5MoeTextConfig(**moe, **common, **extra)


def _hf_model(architecture: str, **extra):
    torch.manual_seed(0)
    return randomise_hybrid(getattr(transformers, architecture)(_config(architecture, **extra)))


def _batch():
    return left_padded_batch(VOCAB, length=11)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sharded_checkpoint_loads_with_transformers_logits_and_round_trips(tmp_path, architecture):
    assert_loads_and_round_trips(_hf_model(architecture), tmp_path, _batch())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_decoding_matches_transformers_generate_dynamic_and_static(tmp_path, architecture):
    hf = _hf_model(architecture)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    model = load_hf(tmp_path)
    batch = _batch()
    ref, kwargs = greedy_reference(hf, batch)
    assert torch.equal(model.generate(batch["input_ids"], **kwargs).tokens, ref)
    assert torch.equal(model.generate(batch["input_ids"], cache="static", **kwargs).tokens, ref)


def test_compiled_static_decode_compiles_once(tmp_path):
    from torch._dynamo.testing import CompileCounter

    _hf_model("Qwen3NextForCausalLM").save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    ids = _batch()["input_ids"][:2]
    reference = model.generate(ids, max_new_tokens=6).tokens
    torch._dynamo.reset()
    counter = CompileCounter()
    options = dict(cache="static", max_len=20, compile={"backend": counter})
    try:
        first = model.generate(ids, max_new_tokens=6, **options).tokens
        with torch._dynamo.config.patch(error_on_recompile=True):  # a new stream: new states, same graph
            second = model.generate(ids, max_new_tokens=6, **options).tokens
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 1
    assert torch.equal(first, reference) and torch.equal(second, reference)


def test_packed_row_equals_each_sample_run_alone(tmp_path):
    """``cu_seqlens``: attention, DeltaNet state and short convolution all restart at every sample."""
    _hf_model("Qwen3NextForCausalLM").save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    lengths = (5, 1, 9, 6)
    g = torch.Generator().manual_seed(3)
    samples = [torch.randint(0, VOCAB, (1, n), generator=g) for n in lengths]
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.no_grad():
        packed = model(torch.cat(samples, dim=1), cu_seqlens=cu_seqlens)
        alone = torch.cat([model(s) for s in samples], dim=1)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def _add_tensors(directory, tensors: dict) -> None:
    """Add ``tensors`` in a second shard beside ``model.safetensors`` and index both."""
    save_file(tensors, str(directory / "extra.safetensors"))
    weight_map = {}
    for name in ("model.safetensors", "extra.safetensors"):
        with safe_open(str(directory / name), "pt") as f:
            weight_map.update(dict.fromkeys(f.keys(), name))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_mtp_tensors_are_skipped_by_rule_and_other_strays_still_fail(tmp_path):
    _hf_model("Qwen3_5ForCausalLM").save_pretrained(tmp_path)
    _add_tensors(tmp_path, {"mtp.fc.weight": torch.zeros(32, 64),
                            "mtp.layers.0.mlp.experts.3.up_proj.weight": torch.zeros(2, 2)})
    save_hf(load_hf(tmp_path), tmp_path / "back")
    with safe_open(str(tmp_path / "back" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("mtp.")]  # noqa: SIM118 (a safetensors handle)
    _add_tensors(tmp_path, {"mtp.fc.weight": torch.zeros(32, 64), "model.stray.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected \(1\).*model.stray.weight"):
        load_hf(tmp_path)


PUBLISHED = {
    # Qwen3-Next-80B-A3B config.json values; the Qwen3.5 ones are what transformers' config docstrings document.
    "qwen3_next_80b_a3b": ("Qwen3NextForCausalLM", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5120, num_hidden_layers=48, num_attention_heads=16,
        num_key_value_heads=2, head_dim=256, num_experts=512, num_experts_per_tok=10, moe_intermediate_size=512,
        shared_expert_intermediate_size=512)),
    "qwen3_5_9b": ("Qwen3_5ForCausalLM", dict(
        vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=16,
        num_key_value_heads=4, head_dim=256)),
    "qwen3_5_35b_a3b": ("Qwen3_5MoeForCausalLM", dict(
        vocab_size=248320, hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2,
        head_dim=256, num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
        shared_expert_intermediate_size=512)),
}
_CONFIGS = {"Qwen3NextForCausalLM": "Qwen3NextConfig", "Qwen3_5ForCausalLM": "Qwen3_5TextConfig",
            "Qwen3_5MoeForCausalLM": "Qwen3_5MoeTextConfig"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_equal_transformers(name):
    from omnikit import create_model

    architecture, values = PUBLISHED[name]
    config = getattr(transformers, _CONFIGS[architecture])(
        linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
        **values,
    )
    with torch.device("meta"):
        reference = getattr(transformers, architecture)(config)
    ours = create_model(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize(("name", "overrides", "architecture"), [
    ("qwen3_next_tiny", {}, "Qwen3NextForCausalLM"), ("qwen3_5_tiny", {}, "Qwen3_5ForCausalLM"),
    ("qwen3_5_moe_tiny", {}, "Qwen3_5MoeForCausalLM"),
])
def test_save_hf_exports_a_tiny_preset(tmp_path, name, overrides, architecture):
    from omnikit import create_model

    model = create_model(name, **overrides).eval()
    save_hf(model, tmp_path)
    hf = getattr(transformers, architecture).from_pretrained(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        assert max_rel_error(model(**hf_inputs(model, batch)), hf(**batch).logits, batch["attention_mask"]) <= 1e-4


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_config_maps_read_published_spellings_and_write_back(architecture):
    """``full_attention_interval`` / top-level ``rope_theta`` and ``partial_rotary_factor`` (older config.json
    spellings) read like ``layer_types`` / ``rope_parameters``; what the map writes reads back to the same config;
    a layer pattern that is not "every n-th layer" is refused."""
    from omnikit.convert.hub_qwen3_next import MOE, TEXT

    config = _config(architecture).to_dict()
    old = {k: v for k, v in config.items() if k not in ("layer_types", "rope_parameters")}
    old.update(full_attention_interval=4, rope_theta=1e4, partial_rotary_factor=0.25)
    ours = TEXT[architecture](config)
    assert TEXT[architecture](old) == ours and TEXT[architecture](TEXT[architecture].write(ours)) == ours
    if architecture in MOE:
        moe = MOE[architecture](config)
        assert MOE[architecture](MOE[architecture].write(moe)) == moe and moe.normalize_weights
    bad = dict(config, layer_types=["full_attention", *config["layer_types"][1:]])
    with pytest.raises(ValueError, match="layer_types"):
        TEXT[architecture](bad)
