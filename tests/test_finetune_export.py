"""Back out of a fine-tune: LoRA on every tower of a load_hf Qwen3-Omni Thinker (MoE experts included), merged
into the weights and written with save_hf, loads in transformers with the adapted model's logits."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from qwen3_omni_reference import TINY_FULL, randomise, rel_err  # noqa: E402
from test_convert_hub_qwen3_omni import processor_inputs  # noqa: E402
from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe, modeling_qwen3_omni_moe  # noqa: E402

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402
from omnikit.fusion.towers import LORA_KINDS, TOWERS, lora_targets  # noqa: E402

#: every kind but token embeddings (opt-in; see tests/test_lora_published.py)
KINDS = tuple(k for k in LORA_KINDS if k != "embeddings")


def test_merged_lora_exports_to_transformers_with_the_adapted_logits(tmp_path) -> None:
    torch.manual_seed(0)
    hub = modeling_qwen3_omni_moe.Qwen3OmniMoeForConditionalGeneration(
        configuration_qwen3_omni_moe.Qwen3OmniMoeConfig(**TINY_FULL))
    randomise(hub, scale=0.3).save_pretrained(tmp_path / "snapshot", max_shard_size="100KB")
    thinker = load_hf(tmp_path / "snapshot").eval()
    inputs = processor_inputs(thinker, [[("text", 2), ("image", 8, 16), ("audio", 120), ("text", 3)]], seed=4)
    kwargs = hf_inputs(thinker, inputs)
    with torch.no_grad():
        original = thinker(**kwargs)
    torch.manual_seed(1)
    config = peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **lora_targets(thinker, TOWERS, KINDS))
    model = peft.get_peft_model(thinker, config).eval()
    with torch.no_grad():
        adapted = model(**kwargs)
        merged = model.merge_and_unload()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(**kwargs), adapted, rtol=1e-4, atol=1e-5)
    assert rel_err(adapted, original) > 1e-2  # the adapters matter
    out = save_hf(merged, tmp_path / "export", max_shard_size="100KB")
    again = modeling_qwen3_omni_moe.Qwen3OmniMoeForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        reference = again.thinker(**inputs).logits
        reloaded = load_hf(out).eval()(**kwargs)
    assert rel_err(reference, adapted) < 1e-4
    assert rel_err(reloaded, adapted) < 1e-5


def _qwen2_5_thinker(tmp_path):
    from test_convert_hub_qwen2_5_omni import THINKER, mixed_prompt
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni, modeling_qwen2_5_omni

    cls = modeling_qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration
    cls(configuration_qwen2_5_omni.Qwen2_5OmniThinkerConfig(**THINKER)).save_pretrained(tmp_path)
    names = {"model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.self_attn.k_proj",
             "model.audio_tower.layers.1.fc2", "model.visual.merger.mlp.2", "lm_head"}
    return mixed_prompt(), lambda hub, batch: hub(**batch).logits, cls, names


def _qwen3_thinker(tmp_path):
    cls = modeling_qwen3_omni_moe.Qwen3OmniMoeForConditionalGeneration
    randomise(cls(configuration_qwen3_omni_moe.Qwen3OmniMoeConfig(**TINY_FULL)), scale=0.3).save_pretrained(tmp_path)
    thinker = load_hf(tmp_path)
    batch = processor_inputs(thinker, [[("text", 2), ("image", 8, 16), ("audio", 120), ("text", 3)],
                                       [("text", 5), ("image", 8, 8), ("text", 1)]], seed=4)
    names = {"thinker.model.language_model.layers.0.self_attn.v_proj", "thinker.model.visual.blocks.0.attn.qkv",
             "thinker.model.visual.merger_list.1.mlp.2", "thinker.model.audio_tower.conv_out", "thinker.lm_head"}
    return batch, lambda hub, batch: hub.thinker(**batch).logits, cls, names


@pytest.mark.parametrize("build", [_qwen2_5_thinker, _qwen3_thinker], ids=["qwen2_5_omni", "qwen3_omni"])
def test_adapter_alone_loads_with_peft_on_the_transformers_model(build, tmp_path) -> None:
    """save_hf_adapter: LoRA on every tower of a load_hf Thinker, written in peft's format under transformers'
    module names (fused q/k/v split into q_proj/k_proj/v_proj), loads with peft onto transformers' model of the
    original snapshot with the adapted logits."""
    from omnikit.convert.peft_adapter import save_hf_adapter

    torch.manual_seed(0)
    batch, run, cls, names = build(tmp_path / "snapshot")
    thinker = load_hf(tmp_path / "snapshot").eval()
    targets = lora_targets(thinker, TOWERS, ("attention", "mlp", "linear"))
    model = peft.get_peft_model(thinker, peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **targets))
    with torch.no_grad():
        adapted = model(**hf_inputs(thinker, batch))
    out = save_hf_adapter(model.eval(), tmp_path / "adapter")
    assert names <= set(json.loads((out / "adapter_config.json").read_text())["target_modules"])
    hub = peft.PeftModel.from_pretrained(cls.from_pretrained(tmp_path / "snapshot").eval(), out).eval()
    with torch.no_grad():
        logits = run(hub.base_model.model, batch)
    valid = batch["attention_mask"].bool()
    assert rel_err(logits[valid], adapted[valid]) < 1e-4
    if build is _qwen3_thinker:  # adapters on MoE experts are refused: merge and save_hf instead
        experts = peft.get_peft_model(load_hf(tmp_path / "snapshot"), peft.LoraConfig(
            r=2, target_modules=["lm_head"], target_parameters=["text_model.decoder.blocks.0.mlp.experts.down"]))
        with pytest.raises(ValueError, match=r"plain LoRA adapter but it uses \['target_parameters'\]"):
            save_hf_adapter(experts, tmp_path / "refused")
