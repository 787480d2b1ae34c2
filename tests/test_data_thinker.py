"""omnikit.data for the published-layout Thinkers (ThinkerProcessor) and Thinker-Talker codes: files and chat
messages -> processor-style batches through the model's own placeholder layout, labels on the assistant's
turns only, left or right padding that never changes valid logits, budgets and file errors as for the
tiny models."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.data import MediaFileError, OmniProcessor, ThinkerBatch, ThinkerProcessor
from omnikit.data.thinker_processor import IGNORE_INDEX
from omnikit.fusion import codebook_loss
from omnikit.fusion.presets import TINY_OMNI_MARKERS, TINY_OMNI_TOKENS
from omnikit.video.synthetic import write_synthetic_video
from tests.test_data import write_wav


def tokenize(text: str) -> list[int]:
    """Characters as ids 8..103 (clear of the tiny Thinkers' placeholders and markers at 120..126)."""
    return [ord(c) % 96 + 8 for c in text]


def _chat(user: str, reply: str, **media) -> dict:
    return {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": user},
                         {"role": "assistant", "content": reply}], **media}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_wav(root / "q.wav", seconds=0.7)
    pytest.importorskip("av")
    write_synthetic_video(root / "clip.mp4", num_frames=16, fps=8, size=(32, 32), cuts=(8,))
    return root


@pytest.mark.parametrize("name", ["qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"])
def test_files_and_chat_to_labelled_batches_with_either_padding(name: str, files) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model(name).eval()
    samples = [_chat("<image> and <audio>: what?", "a tone", images=[torch.rand(3, 40, 24)],
                     audios=[str(files / "q.wav")]),
               _chat("<video> what moves?", "a box", videos=[str(files / "clip.mp4")], use_audio_in_video=True),
               {"text": "plain text is all learned"}]
    outputs = {}
    for side in ("left", "right"):
        processor = OmniProcessor(model, tokenize, num_frames=4, size=(16, 16), padding_side=side)
        assert isinstance(processor, ThinkerProcessor)
        batch = processor(samples[:2])
        assert isinstance(batch, ThinkerBatch)
        ids, labels, valid = batch.input_ids, batch.labels, batch.inputs["attention_mask"].bool()
        assert batch.inputs["use_audio_in_video"] is True
        assert (ids[~valid] == 0).all() and (labels[~valid] == IGNORE_INDEX).all()
        assert (valid[:, 0] if side == "right" else valid[:, -1]).all()
        for b, reply in enumerate(("a tone", "a box")):  # only the reply and its end marker are learned
            assert labels[b][batch.loss_mask[b]].tolist() == tokenize(reply + "<|im_end|>\n")
        for token in TINY_OMNI_TOKENS.as_dict().values():
            assert not batch.loss_mask[ids == token].any()
        assert int((ids == TINY_OMNI_MARKERS["vision_start_token_id"]).sum()) == 2
        with torch.no_grad():
            logits = model(**batch.model_inputs())
        outputs[side] = [logits[b][valid[b]] for b in range(2)]
    for b in range(2):
        torch.testing.assert_close(outputs["left"][b], outputs["right"][b], rtol=1e-4, atol=1e-5)
    text_only = OmniProcessor(model, tokenize)([samples[2]])
    assert text_only.labels[0].tolist() == tokenize("plain text is all learned")
    assert set(text_only.inputs) == {"input_ids", "attention_mask"}


def test_budgets_and_file_errors_as_for_the_tiny_models(files) -> None:
    model = omnikit.create_model("qwen2_5_omni_thinker_tiny")
    sample = _chat("<video> <audio>", "ok", videos=[str(files / "clip.mp4")], audios=[str(files / "q.wav")])
    full = OmniProcessor(model, tokenize, num_frames=4, size=(16, 16))
    assert full.plan(full.load(sample))[0] == 4
    tight = OmniProcessor(model, tokenize, num_frames=4, size=(16, 16), max_media_tokens=12)
    frames, keep = tight.plan(tight.load(sample))
    assert frames == 2 and tight.visual_tokens(tight.load(sample), frames) + tight.audio_tokens(keep[0]) <= 12
    assert tight([sample]).inputs["video_grid_thw"].tolist() == [[1, 4, 4]]
    with pytest.raises(ValueError, match="`max_media_tokens`=3 "):
        OmniProcessor(model, tokenize, num_frames=4, size=(16, 16), max_media_tokens=3)([sample])
    with pytest.raises(MediaFileError, match=r"missing\.wav"):
        full([_chat("<audio>", "x", audios=[str(files / "missing.wav")])])
    with pytest.raises(ValueError, match=r"`size` multiples of 8 pixels"):
        OmniProcessor(model, tokenize, size=(12, 16))
    with pytest.raises(ValueError, match="1 <image> marker"):
        full([_chat("<image>", "x")])


def test_thinker_talker_batches_carry_codes() -> None:
    model = omnikit.create_model("thinker_talker_tiny")
    processor = OmniProcessor(model, num_frames=4, size=(16, 16))
    k = model.talker.config.num_codebooks
    codes = [torch.randint(0, 8, (k, 9)), torch.randint(0, 8, (k, 3))]
    batch = processor([{"text": "<audio> hello", "audios": [torch.randn(8000)], "codes": codes[0]},
                       {"text": "hi there", "codes": codes[1]}])
    assert batch.codes.shape == (2, k, batch.input_ids.shape[1] * model.frames_per_token)
    assert batch.code_mask.sum(-1).tolist() == [9, 3]
    assert torch.equal(batch.codes[1, :, :3], codes[1]) and not batch.codes[1, :, 3:].any()
    codebook_loss(model(**batch.model_inputs()), batch.codes, batch.code_mask).backward()
    with pytest.raises(ValueError, match=r"expected `codes` .* but got none"):
        processor([{"text": "no speech"}])
    with pytest.raises(ValueError, match=r"with F <= 4 .* but got 5 frames"):
        processor([{"text": "ab", "codes": torch.zeros(k, 5, dtype=torch.long)}])
