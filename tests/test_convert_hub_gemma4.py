"""Gemma 4 text models: tiny random transformers ``Gemma4ForCausalLM`` saved in shards, loaded by
load_hf, give transformers' logits on a left-padded batch (an E2B-style config with per-layer
embeddings, KV sharing and double-wide MLPs; a 26B-style MoE config with K = V global layers),
decode greedily like transformers' ``generate`` (dynamic and static caches) and round-trip through
save_hf -> from_pretrained. Every structural config option is honoured or refused."""

from __future__ import annotations

import pytest
import torch
from references import left_padded_batch, max_rel_error

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

VOCAB = 80
S, F = "sliding_attention", "full_attention"

E2B_STYLE = dict(
    num_hidden_layers=5, layer_types=[S, F, S, S, F], num_kv_shared_layers=2, use_double_wide_mlp=True,
    hidden_size_per_layer_input=8, vocab_size_per_layer_input=VOCAB, final_logit_softcapping=3.0,
)
MOE_STYLE = dict(
    num_hidden_layers=3, layer_types=[S, S, F], attention_k_eq_v=True, num_global_key_value_heads=1,
    hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
    final_logit_softcapping=3.0, tie_word_embeddings=False,
)


def _hf_model(**extra):
    torch.manual_seed(0)
    values = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=24, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=8, global_head_dim=16, sliding_window=3, rms_norm_eps=1e-6, pad_token_id=0)
    config = transformers.Gemma4TextConfig(**{**values, **extra})
    model = transformers.Gemma4ForCausalLM(config)
    return _randomise(model)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Norm weights, router scales, per-expert scales and layer scalars away from their constant inits."""
    g = torch.Generator().manual_seed(0)
    saved = model.state_dict().keys()  # not the buffers computed at build (embedding scales, rotary tables)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name not in saved:
                continue
            if any(k in name for k in ("norm", "scale", "layer_scalar")):
                tensor.copy_(1 + 0.3 * torch.randn(tensor.shape, generator=g))
            elif "lm_head" in name:  # untied: large enough that the final softcap bites
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=g))
            elif "experts" in name or "embed_tokens" in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
    return model.eval()


def _batch():
    return left_padded_batch(VOCAB, low=1)


CASES = {"e2b_style": E2B_STYLE, "moe_style": MOE_STYLE}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_checkpoint_loads_with_transformers_logits(tmp_path, case):
    hf = _hf_model(**CASES[case])
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = load_hf(tmp_path / "hf")
    batch = _batch()
    with torch.no_grad():
        ref = hf(**batch).logits
        ours = model(**hf_inputs(model, batch))
    assert ref.abs().max() > 0.5 * hf.config.final_logit_softcapping  # the softcap bites
    assert max_rel_error(ours, ref, batch["attention_mask"]) <= 1e-4
    save_hf(model, tmp_path / "back", max_shard_size="20KB")
    again = transformers.Gemma4ForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert max_rel_error(again(**batch).logits, ref, batch["attention_mask"]) <= 1e-4


def test_kv_shared_layers_have_no_key_value_weights(tmp_path):
    _hf_model(**E2B_STYLE).save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    attn = [block.attn for block in model.decoder.blocks]
    assert [a.kv_reuse for a in attn] == [None, None, None, "sliding", "full"]
    assert [a.kv_store for a in attn] == [None, "full", "sliding", None, None]
    assert attn[3].qkv.out_features == 4 * 8 and attn[4].qkv.out_features == 4 * 16
    assert model.decoder.blocks[4].mlp.hidden == 2 * 24  # double-wide MLP in KV-shared layers


@pytest.mark.parametrize(("case", "cache", "compile"), [
    ("e2b_style", "dynamic", False), ("e2b_style", "static", False), ("moe_style", "static", False),
    ("e2b_style", "static", {"backend": "aot_eager"}),  # KV sharing + sliding windows traced with fullgraph
])
def test_greedy_decoding_matches_transformers_generate(tmp_path, case, cache, compile):
    hf = _hf_model(**CASES[case])
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    model = load_hf(tmp_path)
    batch = _batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ref = hf.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate uses for left padding
    out = model.generate(ids, key_padding_mask=mask.bool(), positions=positions, next_position=mask.sum(-1),
                         max_new_tokens=8, cache=cache, compile=compile)
    assert torch.equal(out.tokens, ref)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("hidden_activation", "silu", "hidden_activation"),
    ("attention_bias", True, "attention_bias"),
    ("use_bidirectional_attention", "all", "use_bidirectional_attention"),
    ("rope_parameters", {"sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
                         "full_attention": {"rope_type": "default", "rope_theta": 1e6}}, "sliding_attention"),
    ("per_layer_config", {"0": {"head_dim": 4}}, r"per_layer_config\[0\]"),
])
def test_unsupported_config_options_are_refused_by_name(key, value, match):
    from omnikit.convert.hub_gemma4 import text_config_from_hf

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 24,
              "vocab_size": VOCAB, key: value}
    with pytest.raises(ValueError, match=match):
        text_config_from_hf(config)


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_hf_exports_a_model_built_from_a_config(tmp_path, case):
    from omnikit.convert.hub_gemma4 import text_config_from_hf
    from omnikit.models.gemma4 import Gemma4LM

    hf = _hf_model(**CASES[case])
    torch.manual_seed(3)
    model = _randomise(Gemma4LM(text_config_from_hf(hf.config.to_dict())))
    save_hf(model, tmp_path)
    again = transformers.Gemma4ForCausalLM.from_pretrained(tmp_path).eval()
    batch = _batch()
    with torch.no_grad():
        assert max_rel_error(model(**hf_inputs(model, batch)), again(**batch).logits, batch["attention_mask"]) <= 1e-4


_PUBLISHED_COMMON = dict(vocab_size=262_144, head_dim=256, global_head_dim=512, final_logit_softcapping=30.0,
                         rms_norm_eps=1e-6)
PUBLISHED = {
    # Values of the published checkpoints' GGUF metadata (see docs/checkpoints_gemma4.md for the
    # provenance and the numbers that are assumptions).
    "gemma4_e2b": dict(hidden_size=1536, num_hidden_layers=35, num_attention_heads=8, num_key_value_heads=1,
                       intermediate_size=6144, sliding_window=512, num_kv_shared_layers=20, use_double_wide_mlp=True,
                       hidden_size_per_layer_input=256, vocab_size_per_layer_input=262_144,
                       layer_types=[F if (i + 1) % 5 == 0 else S for i in range(35)]),
    "gemma4_e4b": dict(hidden_size=2560, num_hidden_layers=42, num_attention_heads=8, num_key_value_heads=2,
                       intermediate_size=10240, sliding_window=512, num_kv_shared_layers=18,
                       hidden_size_per_layer_input=256, vocab_size_per_layer_input=262_144),
    "gemma4_26b_a4b": dict(hidden_size=2816, num_hidden_layers=30, num_attention_heads=16, num_key_value_heads=8,
                           num_global_key_value_heads=2, attention_k_eq_v=True, intermediate_size=2112,
                           sliding_window=1024, hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=128,
                           top_k_experts=8, moe_intermediate_size=704),
    "gemma4_31b": dict(hidden_size=5376, num_hidden_layers=60, num_attention_heads=32, num_key_value_heads=16,
                       num_global_key_value_heads=4, attention_k_eq_v=True, intermediate_size=21504,
                       sliding_window=1024, hidden_size_per_layer_input=0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_equal_transformers(name):
    from omnikit import create_model

    config = transformers.Gemma4TextConfig(**_PUBLISHED_COMMON, **PUBLISHED[name])
    with torch.device("meta"):
        reference = transformers.Gemma4ForCausalLM(config)
    ours = create_model(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert [b.attn.kv_reuse is not None for b in ours.decoder.blocks] == [
        layer.self_attn.is_kv_shared_layer for layer in reference.model.layers]


def test_loaded_experts_run_the_grouped_kernel(tmp_path):
    """load_hf leaves no stacked (3-D) tensor on a memory-mapped file's 8-byte offsets: the experts'
    stacked weights are aligned, so the MoE runs torch's grouped GEMM (ragged rows) instead of padding
    every expert (vectors and matrices may stay mapped where the file holds them)."""
    from omnikit.moe.grouped import grouped_mm_native

    _hf_model(**MOE_STYLE).save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert all(p.data_ptr() % 64 == 0 for p in model.parameters() if p.ndim >= 3)
    experts = model.decoder.blocks[0].moe.experts
    x = torch.zeros(3, 32)
    assert grouped_mm_native(x, experts.gate_up) and grouped_mm_native(x, experts.down)


def test_transformers_gemma4_has_no_router_aux_loss():
    """transformers' Gemma 4 defines no load-balancing loss (no ``router_aux_loss_coef``, no ``aux_loss``
    with router logits), so a Gemma 4 training step has none to match; if one appears, this fails."""
    hf = _hf_model(**MOE_STYLE)
    assert not hasattr(hf.config, "router_aux_loss_coef")
    out = hf(input_ids=torch.randint(1, VOCAB, (1, 5)), output_router_logits=True)
    assert getattr(out, "aux_loss", None) is None
