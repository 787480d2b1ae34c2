"""Whisper checkpoints: part="audio_encoder" of WhisperForConditionalGeneration / WhisperModel gives
omnikit's WhisperEncoder with transformers' encoder outputs, and save_hf writes it back."""

from __future__ import annotations

import pytest
import torch
from references import randomise_norms_and_biases

transformers = pytest.importorskip("transformers")

from omnikit.audio.whisper import WhisperEncoder  # noqa: E402
from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402


def _config() -> transformers.WhisperConfig:
    return transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=150,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )


@pytest.mark.parametrize("cls", ["WhisperForConditionalGeneration", "WhisperModel"])
def test_audio_encoder_part_matches_transformers(tmp_path, cls):
    torch.manual_seed(0)
    hf = randomise_norms_and_biases(getattr(transformers, cls)(_config()))
    hf.save_pretrained(tmp_path / "hf", max_shard_size="30KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    encoder = load_hf(tmp_path / "hf", part="audio_encoder")
    assert isinstance(encoder, WhisperEncoder)
    inputs = {"input_features": torch.randn(2, 16, 300)}
    with torch.no_grad():
        ref = hf.get_encoder()(**inputs).last_hidden_state
        ours = encoder(**hf_inputs(encoder, inputs)).hidden_states
    assert float((ours - ref).abs().max() / ref.abs().max()) <= 1e-4
    save_hf(encoder, tmp_path / "back")
    again = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()  # decoder left random
    with torch.no_grad():
        assert float((again.get_encoder()(**inputs).last_hidden_state - ref).abs().max() / ref.abs().max()) <= 1e-4


def test_whisper_needs_a_part(tmp_path):
    transformers.WhisperModel(_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"`part` must be given for WhisperModel; its parts: \['audio_encoder'\]"):
        load_hf(tmp_path)


@pytest.mark.parametrize(("name", "published"), [
    ("whisper_base_encoder", dict(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8,
                                  encoder_ffn_dim=2048)),
    ("whisper_large_v3_encoder", dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                                      encoder_ffn_dim=5120)),
])
def test_encoder_presets_hold_the_published_tensors(name, published):
    """Every tensor of the published encoder (openai/whisper-base, -large-v3 config values) has its
    place in the preset, with its shape: the key map plans the whole checkpoint part."""
    from omnikit import create_model
    from omnikit.convert.hub_whisper import whisper_key_map

    config = transformers.WhisperConfig(max_source_positions=1500, **published)
    with torch.device("meta"):
        reference = transformers.models.whisper.modeling_whisper.WhisperEncoder(config)
    ours = create_model(name, device="meta")
    plan = whisper_key_map(config.d_model).plan({k: v.shape for k, v in ours.state_dict().items()})
    theirs = {k: v.shape for k, v in reference.state_dict().items()}
    sources = {p.source: p.shape(ours.state_dict()[k].shape) for k, ps in plan.items() for p in ps if p.source}
    assert sources == {k: tuple(v) for k, v in theirs.items()}
