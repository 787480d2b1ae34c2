"""End to end: a WAV and an MP4 on disk -> manifest dataset -> DataLoader -> omni model with LoRA ->
one optimizer step -> adapter saved and reloaded with equal outputs."""

from __future__ import annotations

import json

import pytest
import torch

import omnikit
from omnikit.data import MediaDataset, OmniProcessor
from omnikit.fusion import text_lm_loss
from omnikit.fusion.models import TINY_TOKENS
from omnikit.fusion.towers import lora_targets
from omnikit.video.synthetic import write_synthetic_video
from tests.test_data import write_wav

peft = pytest.importorskip("peft")
pytest.importorskip("av")


def test_files_to_lora_step_to_reloaded_adapter(tmp_path) -> None:
    write_wav(tmp_path / "question.wav", seconds=0.6)
    write_synthetic_video(tmp_path / "clip.mp4", num_frames=16, fps=8, size=(32, 32), cuts=(8,))
    lines = [
        {"messages": [{"role": "user", "content": "<audio> what was asked?"}, {"role": "assistant", "content": "hi"}],
         "audios": ["question.wav"]},
        {"messages": [{"role": "user", "content": "<video> what moves?"}, {"role": "assistant", "content": "a box"}],
         "videos": ["clip.mp4"], "use_audio_in_video": True},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(line) for line in lines))

    torch.manual_seed(0)
    base = omnikit.create_model("omni_early_tiny")
    processor = OmniProcessor(base, num_frames=4, size=(16, 16), max_media_tokens=200)
    dataset = MediaDataset(tmp_path / "train.jsonl", processor)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)))
    assert batch.frames.shape == (2 - 1, 4, 3, 16, 16)
    assert len(batch.audio_tokens) == 2  # the WAV and the MP4's soundtrack (use_audio_in_video)

    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, **lora_targets(base)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logits = model(**batch.model_inputs())
    loss = text_lm_loss(logits, batch.input_ids, media_tokens=TINY_TOKENS, loss_mask=batch.loss_mask)
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(**batch.model_inputs())
        with model.disable_adapter():
            assert not torch.allclose(model(**batch.model_inputs()), trained, atol=1e-5)
    model.save_pretrained(tmp_path / "adapter")

    torch.manual_seed(0)
    fresh = omnikit.create_model("omni_early_tiny").eval()
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch.model_inputs()), trained)
