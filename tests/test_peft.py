"""Hugging Face peft on omnikit models: LoRA / DoRA by module name, LoRA on MoE experts, merge,
safetensors adapters, Talker LoRA gradients, per-tower freezing."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion.towers import TOWERS, lora_targets, tower_parameters, train_towers
from omnikit.utils.checks import OmnikitValueError

peft = pytest.importorskip("peft")


def _omni_inputs(model):
    return model.contract_inputs([12, 9]).kwargs


def _peft(model, *, towers=("thinker",), kinds=("attention", "mlp"), **config):
    targets = lora_targets(model, towers, kinds)
    config = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **config,
                             **targets)
    return peft.get_peft_model(model, config)


def _lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("dora", [False, True])
def test_lora_on_thinker_attention_and_mlp_merges_and_unmerges(dora: bool) -> None:
    base = omnikit.create_model("omni_early_tiny").eval()
    inputs = _omni_inputs(base)
    with torch.no_grad():
        reference = base(**inputs)
    names = lora_targets(base)["target_modules"]
    model = _peft(base, use_dora=dora)
    assert len(names) == 2 * (2 + 3)  # 2 blocks x (qkv, out, gate, up, down)
    assert all(n.startswith("thinker.decoder.") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        adapted = model(**inputs)
        assert not torch.allclose(adapted, reference, atol=1e-4)  # random B: the adapter changes the output
        model.merge_adapter()
        torch.testing.assert_close(model(**inputs), adapted, atol=1e-5, rtol=1e-5)
        model.unmerge_adapter()
        torch.testing.assert_close(model(**inputs), adapted, atol=1e-5, rtol=1e-5)
        with model.disable_adapter():
            torch.testing.assert_close(model(**inputs), reference, atol=1e-5, rtol=1e-5)


def test_lora_on_moe_experts_via_target_parameters() -> None:
    talker = omnikit.create_model("talker_tiny", num_experts=4, top_k=2, expert_hidden=32).eval()
    inputs = talker.contract_inputs([6, 4]).kwargs
    with torch.no_grad():
        reference = talker(**inputs)
    targets = lora_targets(talker, ("talker",), ("experts",))
    assert targets["target_parameters"] == [
        f"decoder.blocks.{i}.mlp.experts.{w}" for i in range(2) for w in ("gate_up", "down")
    ]
    model = _peft(talker, towers=("talker",), kinds=("experts",))
    lora = _lora_params(model)
    assert len(lora) == 2 * 4  # A and B per stacked weight
    # one rank-r pair per expert: A holds r * num_experts rows
    a = next(p for n, p in lora.items() if n.endswith("lora_A.default.weight"))
    assert a.shape[0] == 4 * 4
    adapted = model(**inputs)
    assert not torch.allclose(adapted, reference, atol=1e-4)
    adapted.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())
    with torch.no_grad():
        model.merge_adapter()
        torch.testing.assert_close(model(**inputs), adapted.detach(), atol=1e-5, rtol=1e-5)
        model.unmerge_adapter()
        with model.disable_adapter():
            torch.testing.assert_close(model(**inputs), reference, atol=1e-5, rtol=1e-5)


def test_adapter_saves_as_safetensors_and_reloads_with_equal_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = _peft(omnikit.create_model("omni_early_tiny").eval())
    inputs = _omni_inputs(model.base_model.model)
    with torch.no_grad():
        expected = model(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    torch.manual_seed(1)  # the same base weights (a real run loads them with omnikit.load_pretrained)
    reloaded = peft.PeftModel.from_pretrained(omnikit.create_model("omni_early_tiny").eval(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs), expected)


@pytest.mark.parametrize("strategy", ["delay", "depth", "mtp"])
def test_talker_lora_gets_non_zero_gradients_everywhere(strategy: str) -> None:
    base = omnikit.create_model("thinker_talker_tiny", strategy=strategy)
    inputs = base.contract_inputs([10, 7]).kwargs
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(base, ("talker",))["target_modules"])
    model = peft.get_peft_model(base, config)  # standard init: B = 0, so A's gradient is 0 on the first step
    lora = _lora_params(model)
    assert lora and all(".talker." in n for n in lora)
    opt = torch.optim.SGD(lora.values(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        logits = model(**inputs)
        omnikit.fusion.codebook_loss(logits, inputs["codes"]).backward()
        opt.step()
    zero = [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not zero


def test_towers_partition_the_parameters_and_train_each_alone() -> None:
    model = omnikit.create_model("thinker_talker_tiny")
    groups = tower_parameters(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(n for g in groups.values() for n in g) == sorted(names)
    assert all(n.startswith("codec.") for n in groups["other"])
    assert all(groups[t] for t in TOWERS)
    for tower in TOWERS:
        trainable = train_towers(model, [tower])
        assert trainable == sorted(groups[tower])
        assert {n for n, p in model.named_parameters() if p.requires_grad} == set(groups[tower])
    assert all(".encoder." not in n for n in groups["projector"])


def test_xattn_fusion_layers_are_projector_and_bad_towers_raise() -> None:
    model = omnikit.create_model("omni_xattn_tiny")
    groups = tower_parameters(model)
    assert any(".fusion." in n for n in groups["projector"])
    assert not any(".fusion." in n for n in groups["thinker"])
    with pytest.raises(OmnikitValueError, match="towers"):
        train_towers(model, ["speech"])
    with pytest.raises(OmnikitValueError, match="kinds"):
        lora_targets(model, kinds=("conv",))


def test_gemma4_lora_reaches_clippable_linears_towers_and_every_expert() -> None:
    """LoRA on Gemma 4: the audio tower's clippable linears (plain ``nn.Linear`` s to peft), the
    text model's attention and MLPs (the per-layer-embedding branches included), and its 3-D experts
    with one rank-r pair per expert; one training step gives every adapter a gradient."""
    model = torch.nn.ModuleDict({
        "audio": omnikit.create_model("gemma4_audio_tiny"), "lm": omnikit.create_model("gemma4_tiny"),
    })
    targets = lora_targets(model, ("audio", "thinker"), ("attention", "mlp", "experts"))
    modules = targets["target_modules"]
    clippable = [n for n in modules if n.startswith("audio.") and getattr(model.get_submodule(n), "clipped", False)]
    assert len(clippable) == 2 * (4 + 2 * 2 + 2)  # per block: q k v out, 2 feed-forwards x 2, conv start / end
    assert {n.rpartition(".")[2] for n in modules if n.startswith("audio.")} >= {"q", "rel_k", "fc1", "start"}
    assert not any(n.startswith("audio.embed") for n in modules)  # the embedder is the projector
    per_layer = [f"lm.decoder.blocks.{i}.per_layer.{w}" for i in range(4) for w in ("gate", "proj")]
    assert set(per_layer) <= set(modules)  # the per-layer-embedding gate and projection (E2B / E4B) are MLPs
    assert targets["target_parameters"] == [f"lm.decoder.blocks.{i}.moe.experts.{w}" for i in range(4)
                                            for w in ("gate_up", "down")]
    trainable_before = sum(p.numel() for p in model.parameters())
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **targets))
    lora = _lora_params(peft_model)
    experts_a = [p for n, p in lora.items() if "experts" in n and "lora_A" in n]
    assert experts_a and all(a.shape[0] == 2 * 4 for a in experts_a)  # rank 2 for each of the 4 experts
    assert sum(p.numel() for p in lora.values()) < trainable_before
    audio = peft_model.base_model.model["audio"]
    lm = peft_model.base_model.model["lm"]
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 40, generator=g)
    ids = torch.randint(0, 128, (2, 7), generator=g)
    loss = audio(features, torch.tensor([40, 29])).hidden_states.square().mean() + lm(ids).float().square().mean()
    loss.backward()
    missing = [n for n, p in lora.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
