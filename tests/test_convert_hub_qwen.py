"""Qwen3 / Qwen2 / Qwen3-MoE causal LMs: tiny random transformers models saved in shards, loaded by
load_hf, must give transformers' logits (left-padded batches), round-trip through save_hf ->
from_pretrained, and decode greedily token for token like transformers' generate."""

from __future__ import annotations

import pytest
import torch
from references import (
    assert_loads_and_round_trips,
    greedy_reference,
    left_padded_batch,
    max_rel_error,
    randomise_norms_and_biases,
)

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

VOCAB = 96


def _common(**extra):
    return dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e4},
                **extra)


def _hf_model(kind: str, **extra):
    torch.manual_seed(0)
    if kind == "qwen3":
        config = transformers.Qwen3Config(head_dim=8, **_common(**extra))
        return randomise_norms_and_biases(transformers.Qwen3ForCausalLM(config))
    if kind == "qwen2":
        return randomise_norms_and_biases(transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**_common(**extra))))
    config = transformers.Qwen3MoeConfig(head_dim=8, moe_intermediate_size=16, num_experts=6, num_experts_per_tok=2,
                                         **_common(**extra))
    return randomise_norms_and_biases(transformers.Qwen3MoeForCausalLM(config))


def _batch():
    return left_padded_batch(VOCAB, length=9)


_max_rel_error = max_rel_error


CASES = [
    ("qwen3", {}),
    ("qwen3", {"tie_word_embeddings": True, "attention_bias": True}),
    ("qwen2", {}),
    ("qwen3_moe", {"norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": [1]}),
    ("qwen3_moe", {"norm_topk_prob": True, "decoder_sparse_step": 2}),
]


@pytest.mark.parametrize(("kind", "extra"), CASES)
def test_sharded_checkpoint_loads_with_transformers_logits(tmp_path, kind, extra):
    assert_loads_and_round_trips(_hf_model(kind, **extra), tmp_path, _batch())


def test_tied_embeddings_stay_tied(tmp_path):
    _hf_model("qwen3", tie_word_embeddings=True).save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert model.lm_head.weight is model.embed.weight


def test_moe_layers_follow_sparse_step_and_mlp_only_layers(tmp_path):
    from omnikit.moe import MoE

    _hf_model("qwen3_moe", decoder_sparse_step=1, mlp_only_layers=[1]).save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert [isinstance(b.mlp, MoE) for b in model.decoder.blocks] == [True, False, True]


@pytest.mark.parametrize("kind", ["qwen3", "qwen3_moe"])
def test_greedy_decoding_matches_transformers_generate(tmp_path, kind):
    hf = _hf_model(kind)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    model = load_hf(tmp_path)
    batch = _batch()
    ref, kwargs = greedy_reference(hf, batch)
    out = model.generate(batch["input_ids"], **kwargs)
    assert torch.equal(out.tokens, ref)


def test_save_hf_exports_a_preset_built_by_create_model(tmp_path):
    from omnikit import create_model

    model = create_model("decoder_tiny", vocab_size=VOCAB).eval()
    save_hf(model, tmp_path)
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        assert max_rel_error(model(**hf_inputs(model, batch)), hf(**batch).logits, batch["attention_mask"]) <= 1e-4


PUBLISHED = {
    # Qwen3-0.6B / Qwen3-1.7B / Qwen3-30B-A3B config.json values.
    "qwen3_0_6b": ("Qwen3", dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                 tie_word_embeddings=True)),
    "qwen3_1_7b": ("Qwen3", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                 tie_word_embeddings=True)),
    "qwen3_30b_a3b": ("Qwen3Moe", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                                       num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                                       moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                                       norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                                       tie_word_embeddings=False)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_equal_transformers(name):
    from omnikit import create_model

    family, values = PUBLISHED[name]
    config = getattr(transformers, f"{family}Config")(vocab_size=151936, rms_norm_eps=1e-6, **values)
    with torch.device("meta"):
        reference = getattr(transformers, f"{family}ForCausalLM")(config)
    ours = create_model(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_hf_inputs_names_what_is_missing_or_misshaped(tmp_path):
    _hf_model("qwen2").save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    with pytest.raises(ValueError, match="expected 'input_ids'"):
        hf_inputs(model, {"attention_mask": torch.ones(1, 3)})
    with pytest.raises(ValueError, match=r"attention_mask'\]` expected shape \(1, 3\) but got \(1, 4\)"):
        hf_inputs(model, {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 4)})
