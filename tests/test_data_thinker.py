"""omnikit.data for the published-layout Thinkers (ThinkerProcessor) and Thinker-Talker codes: files and chat
messages -> processor-style batches through the model's own placeholder layout, labels on the assistant's
turns only, left or right padding that never changes valid logits, budgets and file errors as for the
tiny models."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.convert import hf_inputs
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
    assert processor([{"text": "no speech"}]).codes is None  # Thinker-only training
    with pytest.raises(ValueError, match=r"`samples` expected codes on every sample of a batch or on none"):
        processor([{"text": "ab", "codes": codes[1]}, {"text": "no speech"}])
    with pytest.raises(ValueError, match=r"with F <= 4 .* but got 5 frames"):
        processor([{"text": "ab", "codes": torch.zeros(k, 5, dtype=torch.long)}])


def _tiny_tokenizer():
    """A character-level Hugging Face tokenizer built offline: printable ASCII at ids 1..95, newline 112, the
    chat markers and the tiny Thinkers' placeholders / media markers as special tokens at their ids."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    named = {"audio_token": ("<|AUDIO|>", 120), "image_token": ("<|IMAGE|>", 121), "video_token": ("<|VIDEO|>", 122),
             "vision_bos_token": ("<|vision_bos|>", 123), "vision_eos_token": ("<|vision_eos|>", 124),
             "audio_bos_token": ("<|audio_bos|>", 125), "audio_eos_token": ("<|audio_eos|>", 126)}
    vocab = {"<pad>": 0, **{chr(c): c - 31 for c in range(32, 127)}, "<|im_start|>": 110, "<|im_end|>": 111, "\n": 112}
    vocab.update(dict(named.values()))
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", extra_special_tokens={k: v for k, (v, _) in named.items()})
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    return tokenizer


PROCESSORS = {  # Thinker preset: (transformers processor module and class, image mean / std of the published
    # config, the frame rate the processor assumes when none is given)
    "qwen2_5_omni_thinker_tiny": ("qwen2_5_omni.processing_qwen2_5_omni", "Qwen2_5OmniProcessor", None, 2.0),
    "qwen3_omni_thinker_tiny": ("qwen3_omni_moe.processing_qwen3_omni_moe", "Qwen3OmniMoeProcessor", (0.5, 0.5, 0.5),
                                1.0),
}


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_batches_equal_the_transformers_processor(name: str) -> None:
    """The transformers processor of the architecture (Whisper features, Qwen2-VL image and video processors,
    the tokenizer above) on the same chats with an image, a clip and an audio, left padded: equal ids and
    masks, pixels to float32 rounding, log-mels equal on the valid frames (Qwen2.5-Omni's processor pads
    them to 30 s, omnikit to the longest clip)."""
    import importlib

    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    module, cls, norm, fps = PROCESSORS[name]
    processor_cls = getattr(importlib.import_module(f"transformers.models.{module}"), cls)
    tokenizer = _tiny_tokenizer()
    geometry = dict(patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=64, max_pixels=4096)
    if norm is not None:
        geometry.update(image_mean=list(norm), image_std=list(norm))
    reference = processor_cls(
        image_processor=Qwen2VLImageProcessor(**geometry),
        video_processor=Qwen2VLVideoProcessor(**geometry, cap_pixels_per_frame=False),
        feature_extractor=transformers.WhisperFeatureExtractor(feature_size=16, sampling_rate=16000),
        tokenizer=tokenizer)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 24), dtype=torch.uint8, generator=g)
    clip = torch.randint(0, 256, (4, 3, 16, 24), dtype=torch.uint8, generator=g)
    wav = torch.randn(8000, generator=g) * 0.1
    samples = [_chat("<image>hi <audio>", "ok", images=[image], audios=[wav]), _chat("<video>moves?", "a box",
                                                                                    videos=[clip])]
    texts = ["<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n<|vision_bos|><|IMAGE|><|vision_eos|>hi "
             "<|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n",
             "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>moves?"
             "<|im_end|>\n<|im_start|>assistant\na box<|im_end|>\n"]
    want = reference(text=texts, images=[image.permute(1, 2, 0).numpy()], videos=[clip.permute(0, 2, 3, 1).numpy()],
                     audio=[wav.numpy()], padding=True, return_tensors="pt",
                     videos_kwargs={"size": {"shortest_edge": 64, "longest_edge": 4096}})
    model = omnikit.create_model(name)
    options = {} if norm is None else {"image_mean": norm, "image_std": norm}
    got = OmniProcessor(model, tokenizer, num_frames=4, size=(16, 24), pad_id=tokenizer.pad_token_id,
                        video_fps=fps, **options)(samples).inputs
    for key in ("input_ids", "attention_mask", "image_grid_thw", "video_grid_thw"):
        assert torch.equal(got[key], want[key]), key
    torch.testing.assert_close(got["video_second_per_grid"], want["video_second_per_grid"].float())
    for key in ("pixel_values", "pixel_values_videos"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6)
    frames = int(want["feature_attention_mask"].sum())
    assert got["input_features"].shape[-1] == frames and got["feature_attention_mask"].all()
    # the last frame's window runs past the clip: transformers pads it with what follows in its batch (zeros up to
    # 30 s for Qwen2.5-Omni; the STFT's reflection when the clip is the batch's longest for Qwen3-Omni), omnikit
    # always with zeros, so an item's features never depend on its batch
    last = frames if name.startswith("qwen2_5") else frames - 1
    torch.testing.assert_close(got["input_features"][..., :last], want["input_features"][..., :last], rtol=0,
                               atol=1e-6)
    if name.startswith("qwen3"):
        return  # the logits then differ through that frame
    with torch.no_grad():  # and the model runs on the transformers processor's batch as on ours
        torch.testing.assert_close(model(**hf_inputs(model, dict(want))), model(**got), rtol=1e-5, atol=1e-5)


def test_processors_pickle_for_dataloader_workers() -> None:
    import copy
    import pickle

    for name, kind in (("qwen2_5_omni_thinker_tiny", ThinkerProcessor), ("omni_early_tiny", OmniProcessor)):
        processor = OmniProcessor(omnikit.create_model(name), size=(16, 16))
        for again in (pickle.loads(pickle.dumps(processor)), copy.deepcopy(processor)):
            assert type(again) is kind and again.size == (16, 16)
