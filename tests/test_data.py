"""omnikit.data: samples -> batches with placeholder runs equal to the encoders' outputs, budgets,
packing, tokenizers, a manifest / folder dataset with missing and corrupt files, DataLoader workers."""

from __future__ import annotations

import itertools
import json
import wave

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import omnikit
from omnikit.data import ByteTokenizer, MediaDataset, MediaFileError, OmniProcessor
from omnikit.fusion.models import TINY_MARKERS, TINY_TOKENS
from omnikit.utils.checks import OmnikitValueError

MODEL = omnikit.create_model("omni_early_tiny").eval()


def write_wav(path, seconds: float = 0.5, rate: int = 16000, seed: int = 0) -> str:
    samples = (np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return str(path)


def _samples(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"text": "<video> what moves? <audio> hi", "videos": [torch.rand(10, 3, 20, 24, generator=g)],
         "audios": [torch.randn(8000, generator=g)]},
        {"messages": [{"role": "user", "content": "<image> and <audio>"}, {"role": "assistant", "content": "ok"}],
         "images": [torch.rand(3, 16, 16, generator=g)], "audios": [torch.randn(5000, generator=g)]},
        {"text": "just text"},
    ]


def test_collated_batch_equals_sample_by_sample() -> None:
    processor = OmniProcessor(MODEL, markers=TINY_MARKERS)
    samples = _samples()
    batch = processor(samples)
    with torch.no_grad():
        logits = MODEL(**batch.model_inputs())
    audio_at = 0
    for i, sample in enumerate(samples):
        alone = processor([sample])
        n = int(batch.lengths[i])
        assert torch.equal(batch.input_ids[i, :n], alone.input_ids[0])
        assert torch.equal(batch.loss_mask[i, :n], alone.loss_mask[0])
        assert not batch.loss_mask[i, n:].any()
        if alone.audio_features is not None:
            k = len(alone.audio_lengths)
            assert torch.equal(batch.audio_lengths[audio_at : audio_at + k], alone.audio_lengths)
            for j in range(k):
                m = int(alone.audio_lengths[j])
                assert torch.equal(batch.audio_features[audio_at + j, :, :m], alone.audio_features[j, :, :m])
            audio_at += k
        with torch.no_grad():
            torch.testing.assert_close(logits[i, :n], MODEL(**alone.model_inputs())[0], atol=1e-5, rtol=1e-5)
    # the assistant's reply (and nothing of the user turn) is learned in a chat sample
    assert batch.loss_mask[1].sum() == len("ok\n")
    assert batch.loss_mask[0, : int(batch.lengths[0])].sum() == len(" what moves?  hi")


def test_packed_rows_give_the_padded_logits() -> None:
    batch = OmniProcessor(MODEL)(_samples(), pack=True)
    with torch.no_grad():
        padded = MODEL(**batch.model_inputs())
        fused = MODEL.fuse(**batch.model_inputs())
        packed = batch.packed
        out = MODEL.thinker(packed.input_ids, media=fused.media, positions=packed.positions,
                            cu_seqlens=packed.cu_seqlens)
    cu = packed.cu_seqlens.tolist()
    for i, (a, b) in enumerate(itertools.pairwise(cu)):
        torch.testing.assert_close(out[0, a:b], padded[i, : b - a], atol=1e-5, rtol=1e-5)


@settings(max_examples=12, deadline=None)
@given(
    audio_samples=st.lists(st.integers(500, 12000), min_size=0, max_size=2),
    videos=st.integers(0, 2), images=st.integers(0, 1),
    budget=st.one_of(st.none(), st.integers(40, 120)),
    xattn=st.booleans(),
)
def test_placeholder_counts_match_the_encoders(audio_samples, videos, images, budget, xattn) -> None:
    model = XATTN if xattn else MODEL
    g = torch.Generator().manual_seed(len(audio_samples) + videos)
    text = " ".join(["<audio>"] * len(audio_samples) + ["<video>"] * videos + ["<image>"] * images) + " end"
    sample = {"text": text, "audios": [torch.randn(n, generator=g) for n in audio_samples],
              "videos": [torch.rand(7, 3, 12, 20, generator=g) for _ in range(videos)],
              "images": [torch.rand(3, 16, 16, generator=g) for _ in range(images)]}
    processor = OmniProcessor(model, num_frames=6, max_media_tokens=budget)
    try:
        batch = processor([sample, {"text": "<audio> x", "audios": [torch.randn(3000, generator=g)]}])
    except ValueError as error:  # a budget below what the items need at their fewest frames: named, documented
        assert budget is not None and "cannot hold sample #0" in str(error), error
        return
    ids = batch.input_ids
    with torch.no_grad():
        audio_out = model.audio.encoder(batch.audio_features, batch.audio_lengths)
        assert audio_out.lengths.tolist() == batch.audio_tokens
        video_tokens = model.video(batch.frames).tokens.shape[0] if batch.frames is not None else 0
        model(**batch.model_inputs())  # the model's own placeholder checks pass
    if xattn:
        assert int((ids == TINY_TOKENS.audio).sum()) == len(batch.audio_tokens)
        return
    assert int((ids == TINY_TOKENS.audio).sum()) == sum(batch.audio_tokens)
    assert int((ids == TINY_TOKENS.video).sum()) == video_tokens == sum(int(np.prod(g)) for g in batch.grids)
    if budget is not None:
        assert int((ids[0] == TINY_TOKENS.audio).sum() + (ids[0] == TINY_TOKENS.video).sum()) <= budget


XATTN = omnikit.create_model("omni_xattn_tiny").eval()


def test_budget_drops_frames_first_then_trims_audio() -> None:
    sample = {"text": "<video> <audio>", "videos": [torch.rand(8, 3, 16, 16)], "audios": [torch.randn(16000)]}
    full = OmniProcessor(MODEL, num_frames=8)([sample])
    assert full.grids == [(4, 4, 4)] and full.audio_tokens == [25]
    tight = OmniProcessor(MODEL, num_frames=8, max_media_tokens=16 + 10)([sample])
    assert tight.grids == [(1, 4, 4)] and tight.audio_tokens[0] <= 10
    with pytest.raises(OmnikitValueError, match="max_media_tokens"):
        OmniProcessor(MODEL, num_frames=8, max_media_tokens=12)([sample])


def test_bad_samples_and_tokenizers_raise_clearly() -> None:
    processor = OmniProcessor(MODEL)
    with pytest.raises(OmnikitValueError, match="1 <audio> marker"):
        processor([{"text": "<audio>", "audios": []}])
    with pytest.raises(OmnikitValueError, match="control bytes"):
        processor([{"text": "a\x01b"}])
    with pytest.raises(OmnikitValueError, match="tokenizer gave ids"):
        OmniProcessor(MODEL, tokenizer=lambda s: [300])([{"text": "x"}])
    with pytest.raises(OmnikitValueError, match="unknown"):
        processor([{"txt": "x"}])
    with pytest.raises(OmnikitValueError, match="multiple of 2"):
        OmniProcessor(MODEL, num_frames=3)


def test_any_tokenizer_with_encode_is_used_without_special_tokens() -> None:
    class HFLike:
        def encode(self, text, add_special_tokens=True):
            return ([9] if add_special_tokens else []) + [10 + len(w) for w in text.split()]

    batch = OmniProcessor(MODEL, tokenizer=HFLike())([{"text": "ab c"}])
    assert batch.input_ids.tolist() == [[12, 11]]
    assert ByteTokenizer().decode(ByteTokenizer().encode("héllo")) == "héllo"


def test_manifest_missing_and_corrupt_files(tmp_path) -> None:
    good = write_wav(tmp_path / "good.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    lines = [{"text": "<audio> a", "audios": ["good.wav"]}, {"text": "<audio> b", "audios": ["missing.wav"]},
             {"text": "<audio> c", "audios": ["corrupt.wav"]}]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    processor = OmniProcessor(MODEL)
    with pytest.raises(MediaFileError, match=r"missing\.wav"):
        MediaDataset(manifest, processor)
    with pytest.warns(UserWarning, match=r"missing\.wav"):
        dataset = MediaDataset(manifest, processor, on_error="skip")
    assert len(dataset) == 2 and dataset.samples[0][1]["audios"] == [good]
    with pytest.warns(UserWarning, match=r"corrupt\.wav"):
        batch = dataset.collate([dataset[0], dataset[1]])
    assert batch.input_ids.shape[0] == 1
    manifest.write_text("\n".join(json.dumps(line) for line in lines[::2]))
    with pytest.raises(MediaFileError, match=r"corrupt\.wav"):
        MediaDataset(manifest, processor)[1]


def test_folder_dataset_with_two_workers_equals_direct_processing(tmp_path) -> None:
    for i in range(4):
        write_wav(tmp_path / f"clip{i}.wav", seconds=0.2 + 0.1 * i, seed=i)
    (tmp_path / "clip0.txt").write_text("say it")
    processor = OmniProcessor(MODEL)
    dataset = MediaDataset(tmp_path, processor)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=dataset.collate,
                                         timeout=60)
    batches = list(loader)
    direct = processor([fields for _, fields in dataset.samples[:2]])
    assert len(batches) == 2
    assert torch.equal(batches[0].input_ids, direct.input_ids)
    assert torch.equal(batches[0].audio_features, direct.audio_features)
    assert dataset.samples[0][1]["text"] == "<audio> say it"
