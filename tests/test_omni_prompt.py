"""Processor-style batches of the omni Thinkers (omnikit.fusion.omni_prompt): packing across items, left padding,
audio-in-video, and placeholder ids in the padding."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts

THINKERS = ["qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name).eval()


def _valid(logits: torch.Tensor, mask: torch.Tensor, b: int) -> torch.Tensor:
    return logits[b][mask[b].bool()]


@pytest.mark.parametrize("name", THINKERS)
def test_audio_in_video_batch_equals_items_alone(name: str) -> None:
    """Videos with soundtracks (and a standalone clip) packed over a left-padded batch give each item's logits."""
    model = _model(name)
    g = torch.Generator().manual_seed(1)
    prompts = [OmniPrompt(model, generator=g).text(2).video(4, 16, 16, seconds_per_step=0.5, audio_frames=60).text(2)
               .audio(20).text(1),
               OmniPrompt(model, generator=g).text(1).image(8, 16).video(2, 8, 8, audio_frames=24).text(3)]
    batch = collate_prompts(prompts)
    assert batch["use_audio_in_video"] is True
    assert batch["input_features"].shape[0] == 3 and batch["video_grid_thw"].shape == (2, 3)
    assert batch["attention_mask"][1, 0] == 0  # the shorter row is left padded
    with torch.no_grad():
        logits = model(**batch)
        for b, prompt in enumerate(prompts):
            alone = model(**collate_prompts([prompt]))
            torch.testing.assert_close(_valid(logits, batch["attention_mask"], b), alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", THINKERS)
def test_placeholder_ids_in_the_padding_change_nothing(name: str) -> None:
    """Padding may hold any id, placeholders and markers included (masked, not matched as media)."""
    model = _model(name)
    inputs = model.contract_inputs([13, 4])
    kwargs = dict(inputs.kwargs)
    ids = kwargs["input_ids"].clone()
    tokens = model.text_model.media_tokens
    padded = int((kwargs["attention_mask"][1] == 0).sum())
    assert padded >= 4
    ids[1, :4] = torch.tensor([tokens.image, tokens.video, tokens.audio, tokens.image])
    with torch.no_grad():
        clean = model(**kwargs)
        noisy = model(**{**kwargs, "input_ids": ids})
    valid = kwargs["attention_mask"].bool()
    assert torch.equal(noisy[valid], clean[valid])


def test_right_padding_and_item_order() -> None:
    model = _model("qwen2_5_omni_thinker_tiny")
    g = torch.Generator().manual_seed(2)
    prompts = [OmniPrompt(model, generator=g).text(1).image(8, 8), OmniPrompt(model, generator=g).image(16, 8).text(5)]
    batch = collate_prompts(prompts, padding_side="right")
    assert batch["attention_mask"].tolist()[0][-1] == 0
    assert batch["image_grid_thw"].tolist() == [[1, 2, 2], [1, 4, 2]]  # items' images in batch order
    assert torch.equal(batch["pixel_values"][:4], prompts[0].pixels["image"][0])


def test_bad_batches_are_refused() -> None:
    model = _model("qwen2_5_omni_thinker_tiny")
    with_track = OmniPrompt(model).video(2, 8, 8, audio_frames=20)
    without = OmniPrompt(model).video(2, 8, 8)
    with pytest.raises(ValueError, match="soundtracks"):
        collate_prompts([with_track, without])
    with pytest.raises(ValueError, match="at least one"):
        collate_prompts([])
    with pytest.raises(ValueError, match="padding_side"):
        collate_prompts([without], padding_side="middle")
