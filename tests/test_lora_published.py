"""lora_targets on the models load_hf returns (tiny random snapshots): the Qwen3-Omni Thinker (text model,
AuT audio tower, ViT with deepstack mergers, MoE experts), the Qwen3-Omni Talker (MoE with a shared
expert, code predictor, input projections) and the Qwen2.5-Omni Thinker; every tower is covered, the
counts equal what peft reports trainable, and every adapter gets a gradient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from qwen3_omni_reference import TINY_FULL, randomise  # noqa: E402
from test_convert_hub_qwen2_5_omni import THINKER, mixed_prompt  # noqa: E402
from test_convert_hub_qwen3_omni import processor_inputs  # noqa: E402
from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni, modeling_qwen2_5_omni  # noqa: E402
from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe, modeling_qwen3_omni_moe  # noqa: E402

from omnikit.convert import hf_inputs, load_hf  # noqa: E402
from omnikit.fusion.towers import LORA_KINDS, TOWERS, lora_parameter_counts, lora_targets  # noqa: E402

R = 2
#: every kind but token embeddings (opt-in: a position table read as a weight, never called, would get no gradient)
KINDS = tuple(k for k in LORA_KINDS if k != "embeddings")


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = configuration_qwen3_omni_moe.Qwen3OmniMoeConfig(**TINY_FULL)
    path = tmp_path_factory.mktemp("qwen3_omni")
    randomise(modeling_qwen3_omni_moe.Qwen3OmniMoeForConditionalGeneration(config)).save_pretrained(
        path, max_shard_size="100KB")
    return path


@pytest.fixture(scope="module")
def qwen2_5(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = configuration_qwen2_5_omni.Qwen2_5OmniThinkerConfig(**THINKER)
    path = tmp_path_factory.mktemp("qwen2_5_omni")
    modeling_qwen2_5_omni.Qwen2_5OmniThinkerForConditionalGeneration(config).save_pretrained(path)
    return path


def _adapt_and_backward(model: torch.nn.Module, towers, loss_fn) -> tuple[dict[str, int], list[str]]:
    """LoRA (random B) on every kind of ``towers``; returns the per-tower counts and the adapters whose
    gradient is missing or zero after ``loss_fn(peft_model).backward()``."""
    targets = lora_targets(model, towers, KINDS)
    counts = lora_parameter_counts(model, targets, R)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=R, lora_alpha=4, init_lora_weights=False, **targets))
    trainable, _ = adapted.get_nb_trainable_parameters()
    assert sum(counts.values()) == trainable, (counts, trainable)
    loss_fn(adapted).backward()
    lora = {n: p for n, p in adapted.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    return counts, [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]


def test_qwen3_omni_thinker_every_tower_and_experts(qwen3: Path) -> None:
    thinker = load_hf(qwen3)
    targets = lora_targets(thinker, TOWERS, KINDS)
    modules, experts = targets["target_modules"], targets["target_parameters"]
    assert any(n.startswith("audio_encoder.encoder.") and n.endswith(".attn.qkv") for n in modules)
    assert any(n.startswith("vision_encoder.blocks.") for n in modules)
    assert {"audio_encoder.proj1", "audio_encoder.proj2", "vision_encoder.merger.mlp.0",
            "vision_encoder.deepstack_mergers.1.mlp.2", "text_model.lm_head", "audio_encoder.conv_out"} <= set(modules)
    assert experts == [f"text_model.decoder.blocks.{i}.mlp.experts.{w}" for i in range(3) for w in ("gate_up", "down")]
    audio_only = lora_targets(thinker, ("audio",))["target_modules"]  # per-tower selection
    assert audio_only and all(n.startswith("audio_encoder.encoder.") for n in audio_only)
    inputs = hf_inputs(thinker, processor_inputs(thinker, [[("text", 3), ("image", 8, 8), ("audio", 30),
                                                            ("video", 2, 8, 1.0, 0), ("text", 2)]], seed=1))
    counts, zero = _adapt_and_backward(thinker, TOWERS, lambda m: m(**inputs).float().square().mean())
    print("Qwen3-Omni Thinker LoRA parameters per tower:", counts)
    assert set(counts) == {"audio", "vision", "projector", "thinker"}
    assert not zero


def test_qwen3_omni_talker_with_code_predictor_and_experts(qwen3: Path) -> None:
    talker = load_hf(qwen3, part="talker")
    assert lora_targets(talker, ("thinker",), KINDS) == {"target_modules": [], "target_parameters": []}
    targets = lora_targets(talker, ("talker",), KINDS)
    assert {"text_projection.fc1", "hidden_projection.fc2", "decoder.blocks.1.mlp.shared.up",
            "decoder.blocks.0.mlp.shared_gate", "codec_head", "code_predictor.heads.2",
            "code_predictor.decoder.blocks.1.attn.qkv"} <= set(targets["target_modules"])
    assert len(targets["target_parameters"]) == 2 * 2
    inputs = talker.contract_inputs([5, 3]).kwargs
    counts, zero = _adapt_and_backward(talker, ("talker",), lambda m: -m(**inputs).log_probs.mean())
    print("Qwen3-Omni Talker LoRA parameters:", counts)
    assert list(counts) == ["talker"] and not zero


def test_qwen2_5_omni_thinker_every_tower(qwen2_5: Path) -> None:
    thinker = load_hf(qwen2_5)
    inputs = hf_inputs(thinker, mixed_prompt())
    counts, zero = _adapt_and_backward(thinker, TOWERS, lambda m: m(**inputs).float().square().mean())
    print("Qwen2.5-Omni Thinker LoRA parameters per tower:", counts)
    assert set(counts) == {"audio", "vision", "projector", "thinker"}
    assert not zero
