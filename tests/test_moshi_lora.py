"""LoRA fine-tuning of Moshi: ``lora_targets`` covers the temporal transformer, the depth decoder's per-codebook
weights and the embeddings; training on text + audio targets reaches every adapter and changes the voice."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion.towers import lora_targets

peft = pytest.importorskip("peft")

STEPS, FRAMES = 40, 6


def _moshi() -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model("moshi_tiny")


def test_lora_targets_cover_temporal_depth_and_embeddings():
    moshi = _moshi()
    targets = lora_targets(moshi, towers=("thinker", "talker"), kinds=("attention", "mlp", "embeddings"))
    modules, parameters = set(targets["target_modules"]), set(targets["target_parameters"])
    assert {"temporal.blocks.0.attn.qkv", "temporal.blocks.1.attn.out", "temporal.blocks.1.mlp.gate_up",
            "temporal.blocks.0.mlp.down", "embed", "depth.text_embed", "depth.code_embed.0",
            "depth.code_embed.1"} <= modules
    assert parameters == {f"depth.layers.0.{p}.weight" for p in ("attn.qkv", "attn.out", "mlp.fc1", "mlp.fc2")}
    assert not any(name.startswith("audio_encoder") for name in modules | parameters)  # the codec stays frozen
    assert lora_targets(moshi, towers=("thinker",), kinds=("embeddings",))["target_modules"] == ["embed"]


def test_lora_trains_every_adapter_and_changes_the_voice():
    moshi = _moshi()
    g = torch.Generator().manual_seed(3)
    k, size = moshi.config.num_codebooks, moshi.config.codebook_size
    silence = moshi.silence(1)
    user = silence[..., None].expand(1, k, FRAMES)  # the user says nothing
    text = torch.full((1, FRAMES), 7)  # a toy monologue: one word held
    voice = torch.randint(0, size, (1, k, 1), generator=g).expand(1, k, FRAMES)  # a toy voice: one frame held

    def greedy() -> torch.Tensor:
        steps = list(base.stream(user.unbind(2)))
        return torch.stack([s.frame for s in steps[1:]], dim=2)

    targets = lora_targets(moshi, towers=("thinker", "talker"), kinds=("attention", "mlp", "embeddings"))
    model = peft.get_peft_model(moshi, peft.LoraConfig(r=4, lora_alpha=8, **targets))
    base = model.base_model.model
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    assert any("depth.layers.0.mlp.fc1" in n for n in adapters) and any("embed" in n for n in adapters)
    with torch.no_grad():
        before = greedy()
    steps = base.to_steps(text, voice, user)
    optimizer = torch.optim.Adam(adapters.values(), lr=3e-2)
    losses, reached = [], set()
    for _ in range(STEPS):
        loss = base.loss(model(*steps), text, voice).total
        optimizer.zero_grad()
        loss.backward()
        reached |= {n for n, p in adapters.items() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        losses.append(loss.item())
    assert reached == set(adapters), sorted(set(adapters) - reached)  # every adapter, A and B, got a gradient
    # the text head is not adapted and the final norm bounds the state: the text loss keeps a floor, its
    # argmax is right; the codes' loss goes to 0
    assert losses[-1] < 0.3 * losses[0], losses[::10] + losses[-1:]
    with torch.no_grad():
        after = greedy()
    assert not torch.equal(after, before)  # the depth decoder is really trained: the voice changed
    assert torch.equal(after, voice[..., : after.shape[-1]])
