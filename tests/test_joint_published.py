"""Thinker + Talker training on a published Qwen3-Omni pair (tiny random snapshot, load_hf): the joint loss
reaches LoRA on both, greedy codes agree with the teacher-forced scores, a Thinker-only fine-tune moves the
Talker's greedy codes and TalkerAlignment("anchor") keeps them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from qwen3_omni_reference import TINY_FULL, randomise  # noqa: E402
from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe, modeling_qwen3_omni_moe  # noqa: E402

from omnikit.convert import load_hf  # noqa: E402
from omnikit.fusion import text_lm_loss  # noqa: E402
from omnikit.fusion.joint import TalkerAlignment, thinker_talker_loss  # noqa: E402
from omnikit.fusion.qwen3_omni_training import Qwen3OmniTrainingPair  # noqa: E402
from omnikit.fusion.towers import lora_targets  # noqa: E402

REPLY, FRAMES = 6, 6


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = dict(TINY_FULL, talker_config=dict(TINY_FULL["talker_config"], accept_hidden_layer=2))
    model = modeling_qwen3_omni_moe.Qwen3OmniMoeForConditionalGeneration(
        configuration_qwen3_omni_moe.Qwen3OmniMoeConfig(**config))
    path = tmp_path_factory.mktemp("qwen3_omni")
    randomise(model, scale=0.3).save_pretrained(path)
    return path


def _speech(path: Path) -> Qwen3OmniTrainingPair:
    return Qwen3OmniTrainingPair(load_hf(path).eval(), load_hf(path, part="talker").eval(), accept_hidden_layer=2)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 140, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padded
    return {"input_ids": ids, "attention_mask": mask}


def test_joint_loss_trains_lora_on_thinker_and_talker(snapshot: Path) -> None:
    speech = _speech(snapshot)
    batch = _batch(1)
    with torch.no_grad():
        codes = speech.generate_codes(reply_start=REPLY, frames=FRAMES, **batch)
        scores = speech(codes, reply_start=REPLY, **batch)
    assert codes.shape == (2, 4, FRAMES)
    assert torch.equal(scores.logits.argmax(-1), codes[:, 0])  # greedy == argmax of the teacher-forced scores
    targets = lora_targets(speech, ("thinker", "talker"), ("attention", "mlp", "experts"))
    model = peft.get_peft_model(speech, peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, **targets))
    loss = thinker_talker_loss(speech, codes=torch.randint(0, 20, (2, 4, FRAMES)), reply_start=REPLY,
                               loss_mask=batch["attention_mask"].bool(), **batch)
    assert loss.codebooks.shape == (4,) and torch.isfinite(loss.total)
    loss.total.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert any(".talker." in n for n in lora) and any(".thinker." in n for n in lora)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())


def _thinker_only_finetune(speech: Qwen3OmniTrainingPair, align: str | None) -> tuple[float, float, float]:
    """Train LoRA on the Thinker alone towards a new text task for 30 AdamW steps; returns the task loss
    before and after, and the share of the replay batch's greedy code frames that stayed as before."""
    replay, task = _batch(2), _batch(3)
    with torch.no_grad():
        before = speech.generate_codes(reply_start=REPLY, frames=FRAMES, **replay)
    targets = lora_targets(speech, ("thinker",), ("attention", "mlp"))
    model = peft.get_peft_model(speech, peft.LoraConfig(r=4, lora_alpha=8, **targets))
    alignment = TalkerAlignment(speech, align, weight=100.0) if align else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(30):
        logits = speech.thinker(**task)
        loss = text_lm_loss(logits, task["input_ids"], key_padding_mask=task["attention_mask"].bool())
        losses.append(loss.item())
        if alignment is not None:
            loss = loss + alignment.loss(codes=before, reply_start=REPLY, **replay)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = speech.generate_codes(reply_start=REPLY, frames=FRAMES, **replay)
    return losses[0], losses[-1], float((after == before).all(1).float().mean())


def test_thinker_only_finetune_moves_codes_and_anchor_keeps_them(snapshot: Path) -> None:
    base = _speech(snapshot)
    start, plain, kept_plain = _thinker_only_finetune(copy.deepcopy(base), None)
    _, anchored, kept_anchored = _thinker_only_finetune(copy.deepcopy(base), "anchor")
    print(f"task loss {start:.2f} -> {plain:.2f} (Thinker-only), {anchored:.2f} (+ anchor); greedy code frames kept: "
          f"{kept_plain:.2f}, {kept_anchored:.2f}")
    assert kept_plain <= 0.5  # the Talker's codes moved
    assert kept_anchored == 1.0  # every frame kept
    assert plain < anchored < 0.75 * start  # the anchored fine-tune still learns its task
