"""Qwen3-Omni speaks end to end: ``load_hf(path, part="omni")`` of a tiny random transformers
``Qwen3OmniMoeForConditionalGeneration`` (Talker and Code2Wav enabled, norms and biases randomised, sharded)
gives transformers' greedy ``generate`` text, codes and waveform with audio and an image in the prompt; the
stream adds up to the offline waveform; a batch equals its items; a Thinker saved alone loads."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from qwen3_omni_reference import TINY_FULL, randomise, rel_err, tame_code2wav

from omnikit.convert import hf_inputs, load_hf, save_hf
from omnikit.fusion import Qwen3OmniSpeech, Qwen3OmniThinker
from omnikit.vision import patchify_frames

pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeForConditionalGeneration

AUDIO, IMAGE, V_START, V_END, A_START, A_END = 150, 151, 153, 154, 155, 156  # as in TINY_FULL
IM_START, IM_END, USER, ASSISTANT, SYSTEM, TTS_PAD, TTS_BOS, TTS_EOS = range(141, 149)
CODEBOOK = 20
#: The Talker's codec vocabulary: the codebook plus 1024 special ids, as published (3072 = 2048 + 1024), so
#: transformers' "suppress the last 1024 ids" leaves exactly the codes and the eos id.
CODEC = {"codec_nothink_id": 1030, "codec_think_bos_id": 1031, "codec_think_eos_id": 1032, "codec_pad_id": 1033,
         "codec_bos_id": 1034, "codec_eos_token_id": 1035}


def tiny_config() -> dict:
    config = copy.deepcopy(TINY_FULL)
    talker = config["talker_config"]
    talker["text_config"]["vocab_size"] = CODEBOOK + 1024
    talker.update(CODEC, accept_hidden_layer=2, speaker_id={"ethan": 1040, "chelsie": 1041}, audio_token_id=AUDIO,
                  image_token_id=151, video_token_id=152, vision_start_token_id=153, audio_start_token_id=A_START)
    config.update(im_start_token_id=IM_START, im_end_token_id=IM_END, user_token_id=USER,
                  assistant_token_id=ASSISTANT, system_token_id=SYSTEM, tts_pad_token_id=TTS_PAD,
                  tts_bos_token_id=TTS_BOS, tts_eos_token_id=TTS_EOS)
    return config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Qwen3OmniMoeForConditionalGeneration, Path]:
    torch.manual_seed(0)
    model = randomise(Qwen3OmniMoeForConditionalGeneration(Qwen3OmniMoeConfig(**tiny_config())).eval(), scale=0.3)
    tame_code2wav(model.code2wav, CODEBOOK, 4)
    path = tmp_path_factory.mktemp("qwen3_omni_speech")
    model.save_pretrained(path, max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists()
    # transformers' Talker computes audio positions with `self.config.audio_config.n_window` when the prompt also
    # has images or videos, but its config has no audio_config (AttributeError): lend it the Thinker's
    model.talker.config.audio_config = model.config.thinker_config.audio_config
    return model, path


def chat(seed: int, mel_frames: int = 200, image: bool = False) -> dict[str, torch.Tensor]:
    """A system turn, a user turn with an audio clip (and a 16 x 16 image: 4 tokens) and text, and the
    assistant's generation prompt."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, 140, (n,), generator=g).tolist()
    tokens = mel_frames // 100 * 13  # the AuT's 13 tokens per 100 mel frames (whole chunks here)
    picture = [V_START, *[IMAGE] * 4, V_END] if image else []
    ids = [IM_START, SYSTEM, *text(3), IM_END, 9, IM_START, USER, 9, A_START, *[AUDIO] * tokens, A_END, *picture,
           *text(4), IM_END, 9, IM_START, ASSISTANT, 9]
    out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
           "input_features": torch.randn(1, 16, mel_frames, generator=g),
           "feature_attention_mask": torch.ones(1, mel_frames, dtype=torch.long)}
    if image:
        out["pixel_values"], out["image_grid_thw"] = patchify_frames(torch.randn(1, 1, 3, 16, 16, generator=g),
                                                                     torch.tensor([1]), (2, 4, 4), 2)
    return out


def reference(hf: Qwen3OmniMoeForConditionalGeneration, inputs: dict, **options) -> tuple:
    """transformers' greedy generate: (reply tokens, codes (1, K, F), waveform)."""
    seen = []
    decode = hf.code2wav.chunked_decode
    hf.code2wav.chunked_decode = lambda codes, **kw: seen.append(codes) or decode(codes, **kw)
    try:
        with torch.no_grad():
            sequences, wav = hf.generate(**inputs, speaker="Ethan", return_audio=True, talker_do_sample=False,
                                         thinker_eos_token_id=IM_END, **options)
    finally:
        del hf.code2wav.chunked_decode
    return sequences[:, inputs["input_ids"].shape[1]:], seen[0], wav


def test_omni_part_builds_every_component(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    assert isinstance(omni, Qwen3OmniSpeech) and isinstance(omni.thinker, Qwen3OmniThinker)
    assert isinstance(load_hf(path), Qwen3OmniThinker)  # the default part stays the Thinker


def test_greedy_text_codes_and_waveform_equal_transformers(checkpoint) -> None:
    hf, path = checkpoint
    omni = load_hf(path, part="omni")
    inputs = chat(1, image=True)
    tokens, codes, wav = reference(hf, inputs, thinker_max_new_tokens=6, talker_max_new_tokens=10)
    out = omni.generate(**hf_inputs(omni, inputs), max_new_tokens=6, speaker="Ethan", talker_do_sample=False,
                        thinker_eos_token_id=IM_END, talker_max_new_tokens=10)
    assert torch.equal(out.tokens, tokens)
    assert codes.shape[-1] > 1 and torch.equal(out.codes, codes)
    assert out.wav.shape == wav.shape and float((out.wav - wav).abs().max()) <= 1e-4 * float(wav.abs().max())


def test_stream_adds_up_to_the_offline_waveform(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    inputs = hf_inputs(omni, chat(2))
    options = dict(max_new_tokens=5, talker_do_sample=False, thinker_eos_token_id=IM_END, talker_max_new_tokens=9)
    offline = omni.generate(**inputs, **options)
    chunks = list(omni.stream(**inputs, chunk_frames=3, **options))  # Code2Wav streams the same operations
    assert torch.equal(torch.cat([c.text_tokens for c in chunks], dim=1), offline.tokens)
    assert torch.equal(torch.cat([c.codes for c in chunks], dim=2), offline.codes)
    streamed = torch.cat([c.wav for c in chunks], dim=-1)
    # equal to float rounding: a chunk's few rows and the whole reply's norms run different CPU kernels (RMSNorm)
    assert streamed.shape == offline.wav.shape and rel_err(streamed, offline.wav) < 3e-5
    assert chunks[0].codes.shape[-1] == 3 and chunks[0].wav.shape[-1] > 0
    windowed = list(omni.stream(**inputs, chunk_frames=3, decoder_options={"left_context": 2}, **options))
    assert torch.cat([c.wav for c in windowed], dim=-1).shape == offline.wav.shape  # re-decoded context: close


def test_static_cache_and_sampling(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    inputs = hf_inputs(omni, chat(3))
    options = dict(max_new_tokens=4, talker_do_sample=False, thinker_eos_token_id=IM_END, talker_max_new_tokens=6)
    dynamic = omni.generate(**inputs, **options)
    static = omni.generate(**inputs, cache="static", **options)
    assert torch.equal(static.tokens, dynamic.tokens) and torch.equal(static.codes, dynamic.codes)
    torch._dynamo.reset()
    compiled = omni.generate(**inputs, cache="static", compile={"backend": "eager"}, **options)  # fullgraph steps
    assert torch.equal(compiled.tokens, dynamic.tokens) and torch.equal(compiled.codes, dynamic.codes)
    sampled = omni.generate(**inputs, max_new_tokens=4, talker_max_new_tokens=6, speaker="chelsie",
                            generator=torch.Generator().manual_seed(0))
    assert sampled.codes.shape[1] == 4 and int(sampled.codes.max()) < CODEBOOK
    assert torch.isfinite(sampled.wav).all()


def test_text_only_and_bad_arguments(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    inputs = hf_inputs(omni, chat(4))
    text = omni.generate(**inputs, max_new_tokens=3, return_audio=False)
    assert text.codes is None and text.wav is None and text.tokens.shape == (1, 3)
    with pytest.raises(ValueError, match="speaker"):
        omni.generate(**inputs, speaker="nobody")
    with pytest.raises(TypeError, match="talker_top_q"):
        omni.generate(**inputs, talker_top_q=3)


def test_thinker_saved_alone_loads(checkpoint, tmp_path) -> None:
    hf, _ = checkpoint
    hf.thinker.save_pretrained(tmp_path, max_shard_size="100KB")
    thinker = load_hf(tmp_path)
    assert isinstance(thinker, Qwen3OmniThinker)
    inputs = chat(5)
    with torch.no_grad():
        ref = hf.thinker(**inputs).logits
        assert rel_err(thinker(**hf_inputs(thinker, inputs)), ref) < 1e-4


def test_save_hf_of_the_whole_model_loads_in_transformers(checkpoint, tmp_path) -> None:
    hf, path = checkpoint
    omni = load_hf(path, part="omni")
    reloaded = Qwen3OmniMoeForConditionalGeneration.from_pretrained(save_hf(omni, tmp_path, max_shard_size="100KB"))
    saved, original = reloaded.state_dict(), hf.state_dict()
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in original)


def test_a_left_padded_batch_equals_its_items(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    rows = [chat(6, mel_frames=200), chat(7, mel_frames=100)]
    pad = lambda key, left: torch.cat([
        F.pad(r[key], (max(x[key].shape[-1] for x in rows) - r[key].shape[-1], 0)[:: 1 if left else -1])
        for r in rows])
    batch = {"input_ids": pad("input_ids", True), "attention_mask": pad("attention_mask", True),
             "input_features": pad("input_features", False),
             "feature_attention_mask": pad("feature_attention_mask", False)}
    options = dict(max_new_tokens=5, talker_do_sample=False, thinker_eos_token_id=IM_END, talker_max_new_tokens=8)
    together = omni.generate(**hf_inputs(omni, batch), **options)
    for b, row in enumerate(rows):
        alone = omni.generate(**hf_inputs(omni, row), **options)
        frames, samples = alone.codes.shape[-1], alone.wav.shape[-1]
        assert torch.equal(together.tokens[b, : alone.tokens.shape[1]], alone.tokens[0])
        assert int(together.code_lengths[b]) == frames and torch.equal(together.codes[b, :, :frames], alone.codes[0])
        assert rel_err(together.wav[b, :, :samples], alone.wav[0]) < 1e-5


def test_a_checkpoint_without_talker_has_no_omni_part(tmp_path) -> None:
    config = tiny_config()
    config["enable_audio_output"] = False
    torch.manual_seed(0)
    Qwen3OmniMoeForConditionalGeneration(Qwen3OmniMoeConfig(**config)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="enable_audio_output"):
        load_hf(tmp_path, part="omni")
