"""Qwen3-Next / Qwen3.5 / Qwen3.5-MoE hybrid causal LMs: tiny random transformers models (randomised
norms, A_log, dt_bias, gates and biases) saved in shards load with transformers' logits on a
left-padded batch, round-trip through save_hf -> from_pretrained, and decode like ``generate``."""

from __future__ import annotations

import pytest
import torch
from references import randomise_norms_and_biases

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
    model = randomise_norms_and_biases(getattr(transformers, architecture)(_config(architecture, **extra)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("A_log", "dt_bias")):
                param.copy_(torch.randn(param.shape, generator=g))
            elif name.endswith(("shared_expert_gate.weight", "mlp.gate.weight")):
                param.copy_(0.5 * torch.randn(param.shape, generator=g))
            elif "q_proj" in name or "in_proj" in name:  # larger projections: gates and decays far from 0.5
                param.mul_(10)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _max_rel_error(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    valid = mask.bool()
    return float((ours[valid] - ref[valid]).abs().max() / ref[valid].abs().max())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sharded_checkpoint_loads_with_transformers_logits_and_round_trips(tmp_path, architecture):
    hf = _hf_model(architecture)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = load_hf(tmp_path / "hf")
    batch = _batch()
    with torch.no_grad():
        ref = hf(**batch).logits
        ours = model(**hf_inputs(model, batch))
    assert _max_rel_error(ours, ref, batch["attention_mask"]) <= 1e-4
    save_hf(model, tmp_path / "back", max_shard_size="20KB")
    again = type(hf).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert _max_rel_error(again(**batch).logits, ref, batch["attention_mask"]) <= 1e-4
