"""Qwen2.5-Omni speaks: ``load_hf(path, part="omni")`` of a tiny random transformers
``Qwen2_5OmniForConditionalGeneration`` (norms and biases randomised, sharded, with a ``spk_dict.pt``) gives
transformers' greedy ``generate`` text and Talker codes with audio and an image in the prompt (transformers
hands the Thinker's ``pixel_values`` to its Talker, which rejects them: ``talker_pixel_values=None``);
without a token2wav model ``return_audio=True`` says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_convert_hub_qwen2_5_omni import TOKEN2WAV, randomise
from torch import nn

from omnikit.audio import Token2Wav
from omnikit.convert import hf_inputs, load_hf
from omnikit.fusion import Qwen2_5OmniSpeech
from omnikit.vision import patchify_frames

pytest.importorskip("transformers")
from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_config
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf_modeling

IMAGE, VIDEO, AUDIO, V_START, V_END, A_START, A_END = range(900, 907)
TEXT_BOS, TEXT_EOS, TEXT_PAD, SPEAKER_BOS, IM_END = 990, 991, 992, 993, 994
CODEC_BOS, CODEC_END, CODEC_PAD, CODEC_MASK = 60, 61, 62, 63
ROPE = dict(rope_type="default", rope_theta=1e4, mrope_section=[1, 1, 2])
THINKER = dict(
    image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=AUDIO, vision_start_token_id=V_START,
    vision_end_token_id=V_END, audio_start_token_id=A_START, audio_end_token_id=A_END,
    audio_config=dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=32,
                      num_mel_bins=8, n_window=4),
    vision_config=dict(depth=2, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=32,
                       fullatt_block_indexes=[1], patch_size=4, temporal_patch_size=2, window_size=16),
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=1000, rope_parameters=ROPE),
)
TALKER = dict(
    hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, vocab_size=64, embedding_size=32, rope_parameters=ROPE, audio_token_index=AUDIO,
    image_token_index=IMAGE, video_token_index=VIDEO, vision_start_token_id=V_START, audio_start_token_id=A_START,
    audio_end_token_id=A_END, tts_text_start_token_id=TEXT_BOS, tts_text_end_token_id=TEXT_EOS,
    tts_text_pad_token_id=TEXT_PAD, tts_codec_start_token_id=CODEC_BOS, tts_codec_end_token_id=CODEC_END,
    tts_codec_pad_token_id=CODEC_PAD, tts_codec_mask_token_id=CODEC_MASK,
)
SPEAKERS = {"Chelsie": {"bos_token": SPEAKER_BOS, "cond": torch.zeros(8), "ref_mel": torch.zeros(4, 8)},
            "Ethan": {"bos_token": SPEAKER_BOS - 1, "cond": torch.zeros(8), "ref_mel": torch.zeros(4, 8)}}


class CodesOnly(nn.Module):
    """Stands in for transformers' token2wav in the reference run: records the codes it is given."""

    dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, codes: torch.Tensor, **_) -> torch.Tensor:
        self.seen.append(codes)
        return torch.zeros(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[nn.Module, Path]:
    torch.manual_seed(1)
    config = hf_config.Qwen2_5OmniConfig(thinker_config=THINKER, talker_config=TALKER, token2wav_config=TOKEN2WAV)
    hf = randomise(hf_modeling.Qwen2_5OmniForConditionalGeneration(config))  # norms around 1, biases around 0
    path = tmp_path_factory.mktemp("qwen2_5_omni_speech")
    hf.save_pretrained(path, max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").exists()
    torch.save(SPEAKERS, path / "spk_dict.pt")
    hf.speaker_map = SPEAKERS
    hf.token2wav = CodesOnly()
    return hf, path


def prompt(seed: int, mel_frames: int = 40, image: bool = False) -> dict[str, torch.Tensor]:
    """Text, an audio clip (and a 16 x 16 image: 4 tokens), text."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, 900, (n,), generator=g).tolist()
    tokens = ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1
    picture = [V_START, *[IMAGE] * 4, V_END] if image else []
    ids = [*text(3), A_START, *[AUDIO] * tokens, A_END, *picture, *text(4)]
    out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
           "input_features": torch.randn(1, 8, mel_frames, generator=g),
           "feature_attention_mask": torch.ones(1, mel_frames, dtype=torch.long)}
    if image:
        out["pixel_values"], out["image_grid_thw"] = patchify_frames(torch.randn(1, 1, 3, 16, 16, generator=g),
                                                                     torch.tensor([1]), (2, 4, 4), 2)
    return out


def test_greedy_text_and_talker_codes_equal_transformers(checkpoint) -> None:
    hf, path = checkpoint
    omni = load_hf(path, part="omni")
    assert isinstance(omni, Qwen2_5OmniSpeech) and isinstance(omni.vocoder, Token2Wav)  # the token2wav part
    assert sorted(omni.speakers) == ["Chelsie", "Ethan"]
    inputs = prompt(1, image=True)
    hf.token2wav.seen.clear()
    with torch.no_grad():
        sequences, _ = hf.generate(**inputs, speaker="Chelsie", thinker_max_new_tokens=6, thinker_eos_token_id=IM_END,
                                   talker_max_new_tokens=12, talker_do_sample=False,
                                   talker_eos_token_id=[CODEC_PAD, CODEC_END], talker_pixel_values=None)
    reference = hf.token2wav.seen[0]
    chunks = list(omni.stream(**hf_inputs(omni, inputs), max_new_tokens=6, speaker="Chelsie", return_audio=False,
                              thinker_eos_token_id=IM_END, talker_max_new_tokens=12, talker_do_sample=False,
                              chunk_frames=4))
    assert torch.equal(torch.cat([c.text_tokens for c in chunks], dim=1), sequences[:, inputs["input_ids"].shape[1]:])
    codes = torch.cat([c.codes for c in chunks], dim=2)
    assert reference.shape[-1] > 1 and torch.equal(codes[:, 0], reference)
    assert all(c.wav.shape[-1] == 0 for c in chunks)


def test_audio_needs_token2wav_and_text_only_works(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    inputs = hf_inputs(omni, prompt(2))
    omni.vocoder = None  # as for a model built without one
    with pytest.raises(ValueError, match="token2wav"):
        omni.generate(**inputs, max_new_tokens=3)
    text = omni.generate(**inputs, max_new_tokens=3, return_audio=False)
    assert text.tokens.shape == (1, 3) and text.wav is None
    with pytest.raises(ValueError, match="speaker"):
        omni.generate(**inputs, speaker="Nobody", return_audio=False)
    assert isinstance(load_hf(path), type(omni.thinker))  # the default part stays the Thinker


def test_a_plugged_vocoder_gets_each_item_with_its_speaker(checkpoint) -> None:
    _, path = checkpoint
    omni = load_hf(path, part="omni")
    omni.vocoder = CodesOnly()
    out = omni.generate(**hf_inputs(omni, prompt(3)), max_new_tokens=4, speaker="Ethan", talker_max_new_tokens=6,
                        talker_do_sample=False)
    assert out.codes.shape == (1, 1, int(out.code_lengths[0])) and torch.equal(omni.vocoder.seen[0], out.codes[:, 0])
    assert out.wav.shape == (1, 1, 1)
    chunks = list(omni.stream(**hf_inputs(omni, prompt(3)), max_new_tokens=4, speaker="Ethan", chunk_frames=2,
                              talker_max_new_tokens=6, talker_do_sample=False))
    assert torch.equal(torch.cat([c.codes for c in chunks], dim=2), out.codes)
    assert [c.wav.shape[-1] for c in chunks][-1] == 1 and all(c.wav.shape[-1] == 0 for c in chunks[:-1])
