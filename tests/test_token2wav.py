"""Qwen2.5-Omni token2wav (DiT flow matching + BigVGAN): a tiny random transformers model (every parameter random,
sharded snapshot), loaded by ``load_hf(part="token2wav")``, gives transformers' waveform for the same codes, voice
and initial noise; ``save_hf`` writes it back; ``spk_dict.pt`` loads without unpickling code; chunked decoding
equals the offline decoding when its windows cover the utterance, and stays close with the published windows."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from qwen3_omni_reference import randomise

import omnikit
from omnikit.audio import Token2Wav, Token2WavStream, UnknownSpeakerError, convert_speakers, load_speakers
from omnikit.convert import from_transformers, hf_inputs, load_hf, save_hf
from omnikit.utils.checks import OmnikitValueError

pytest.importorskip("transformers")
from test_convert_hub_qwen2_5_omni import TALKER, THINKER
from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_config
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf_modeling

MEL, XVEC, NUM_EMBEDS = 8, 8, 64  # a Talker of 64 codec ids can feed it
#: two look-back layers and one look-ahead layer, 3-frame reflection convs, two AMP kernels, x3 then x2
TOKEN2WAV = dict(
    dit_config=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, head_dim=16, emb_dim=8,
                    enc_emb_dim=XVEC, enc_dim=8, enc_channels=[8, 8, 8, 16], enc_kernel_sizes=[3, 3, 3, 1],
                    enc_dilations=[1, 2, 2, 1], enc_attention_channels=8, enc_se_channels=4, num_embeds=NUM_EMBEDS,
                    mel_dim=MEL, block_size=4, look_ahead_layers=[1], look_backward_layers=[0, 2],
                    rope_parameters=dict(rope_type="default", rope_theta=500.0)),
    bigvgan_config=dict(mel_dim=MEL, upsample_initial_channel=16, resblock_kernel_sizes=[3, 5],
                        resblock_dilation_sizes=[[1, 3, 5], [1, 2, 3]], upsample_rates=[3, 2],
                        upsample_kernel_sizes=[7, 4]),
)


def voice(seed: int = 1, ref_frames: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conditioning": torch.randn(1, XVEC, generator=g),
            "reference_mel": torch.randn(1, ref_frames, MEL, generator=g) - 3}


def codes_of(batch: int, frames: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, NUM_EMBEDS + 1, (batch, frames), generator=torch.Generator().manual_seed(seed))


def tame(token2wav: torch.nn.Module) -> None:
    """Scale the vocoder's last conv so a decoded waveform peaks near 0.5 (random weights otherwise saturate the
    output clamp, and the comparison would compare clamps)."""
    post = token2wav.code2wav_bigvgan_model.conv_post
    with torch.no_grad():
        post.weight.mul_(1e-3)
        torch.manual_seed(0)
        peak = float(token2wav(codes_of(1, 12), **voice(), num_steps=3).abs().max())
        post.weight.mul_(0.5 / peak)


def write_spk_dict(path: Path) -> dict[str, dict]:
    g = torch.Generator().manual_seed(3)
    speakers = {name: {"cond": torch.randn(XVEC, generator=g), "ref_mel": torch.randn(1, 16, MEL, generator=g) - 3,
                       "bos_token": 900 + i} for i, name in enumerate(("Chelsie", "Ethan"))}
    torch.save(speakers, path)
    return speakers


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(4)
    config = hf_config.Qwen2_5OmniConfig(thinker_config=THINKER, talker_config=TALKER, token2wav_config=TOKEN2WAV)
    hf = hf_modeling.Qwen2_5OmniForConditionalGeneration(config)
    randomise(hf.token2wav, scale=0.2).eval()
    tame(hf.token2wav)
    path = tmp_path_factory.mktemp("omni")
    hf.save_pretrained(path, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    write_spk_dict(path / "spk_dict.pt")
    return hf.eval(), path


def peak_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| relative to the reference's peak."""
    assert ours.shape == reference.shape
    return float((ours.double() - reference.double()).abs().max() / reference.abs().max())


def test_waveform_matches_transformers_for_the_same_noise(snapshot) -> None:
    hf, path = snapshot
    model = load_hf(path, part="token2wav")
    assert isinstance(model, Token2Wav)
    codes, v = codes_of(1, 13), voice()
    torch.manual_seed(7)
    with torch.no_grad():
        ref = hf.token2wav(codes, v["conditioning"], v["reference_mel"])  # 10 steps, guidance 0.5, sway -1
        torch.manual_seed(7)
        noise = torch.randn(1, 26, MEL)
        with pytest.MonkeyPatch.context() as patch:  # the float64 reference starts from the same noise
            patch.setattr(torch, "randn", lambda *args, **kwargs: noise.double())
            ref64 = copy.deepcopy(hf.token2wav).double()(codes, v["conditioning"].double(),
                                                          v["reference_mel"].double())
        wav = model.token2wav(codes, noise=noise, **v)
        torch.manual_seed(7)
        drawn = model.token2wav(codes, **v)  # noise=None draws what transformers draws after the same seed
    assert 0.1 < float(ref.abs().max()) < 0.99, "reference silent or saturated: the test would compare clamps"
    assert wav.shape == (1, 13 * model.samples_per_code)
    # float32 rounding over 36 DiT evaluations and the vocoder: transformers' own float32 waveform is ~1e-5 of
    # its peak from the float64 one; omnikit's sits as close to both
    rounding = peak_error(ref.reshape(1, -1), ref64.reshape(1, -1))
    assert rounding < 1e-4
    assert peak_error(wav, ref.reshape(1, -1)) < 1e-4
    assert peak_error(wav, ref64.reshape(1, -1)) < max(1e-4, 3 * rounding)
    assert torch.equal(drawn, wav)
    converted = from_transformers(hf.token2wav).eval()  # the in-memory module converts to the same model
    with torch.no_grad():
        assert peak_error(converted.token2wav(codes, noise=noise, **v), wav) < 1e-6


def test_padded_batch_no_guidance_and_other_schedules_match_transformers(snapshot) -> None:
    """A padded batch equals transformers' per-item decoding (each item's noise drawn after its own seed); guidance
    off (one pass per evaluation), 4 steps, even times."""
    hf, path = snapshot
    model = load_hf(path, part="token2wav")
    codes, v, lengths = codes_of(2, 11, seed=5), voice(6), torch.tensor([11, 7])
    noise = torch.randn(2, 22, MEL, generator=torch.Generator().manual_seed(8))  # item 1's padding stays random
    refs = []
    with torch.no_grad():
        for b, n in enumerate(lengths.tolist()):
            torch.manual_seed(10 + b)
            refs.append(hf.token2wav(codes[b : b + 1, :n], v["conditioning"], v["reference_mel"], num_steps=4,
                                     guidance_scale=0.0, sway_coefficient=None).reshape(1, -1))
            torch.manual_seed(10 + b)
            noise[b, : 2 * n] = torch.randn(1, 2 * n, MEL)
        out = model(codes, lengths, noise=noise, steps=4, guidance_scale=0.0, sway=None, **v)
        grouped = model(codes, lengths, noise=noise.view(2, 11, 2 * MEL), steps=4, guidance_scale=0.0, sway=None, **v)
    assert torch.equal(grouped.audio, out.audio)  # noise may come one row per code, (B, F, repeats * mel)
    assert out.lengths.tolist() == [11 * model.samples_per_code, 7 * model.samples_per_code]
    for b, ref in enumerate(refs):
        valid = ref.shape[-1]
        assert peak_error(out.audio[b, :, :valid], ref) < 1e-5
        assert not out.audio[b, :, valid:].any()


def test_save_hf_round_trip_to_from_pretrained(snapshot, tmp_path) -> None:
    hf, path = snapshot
    model = load_hf(path, part="token2wav")
    save_hf(model, tmp_path, max_shard_size="20KB")
    write_spk_dict(tmp_path / "spk_dict.pt")  # transformers' from_pretrained requires the speakers
    again = hf_modeling.Qwen2_5OmniForConditionalGeneration.from_pretrained(tmp_path).eval()
    ours, theirs = hf.token2wav.state_dict(), again.token2wav.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_speaker_dictionary_loads_safely_and_converts(snapshot, tmp_path) -> None:
    hf, path = snapshot
    written = write_spk_dict(tmp_path / "spk_dict.pt")
    speakers = load_speakers(tmp_path / "spk_dict.pt")
    hf.load_speakers(str(tmp_path / "spk_dict.pt"))  # transformers' reader agrees
    assert sorted(speakers) == sorted(hf.speaker_map) == ["Chelsie", "Ethan"]
    ethan = speakers["Ethan"]
    assert torch.equal(ethan.conditioning, hf.speaker_map["Ethan"]["cond"])
    assert torch.equal(ethan.reference_mel, written["Ethan"]["ref_mel"]) and ethan.extras == {"bos_token": 901}
    with pytest.raises(ValueError, match=r"'Nobody'.*\['Chelsie', 'Ethan'\]"):
        speakers["Nobody"]
    assert "Nobody" not in speakers and isinstance(UnknownSpeakerError("x"), KeyError)

    target = convert_speakers(tmp_path / "spk_dict.pt")
    assert target.name == "speakers.safetensors" and target.with_suffix(".json").is_file()
    again = load_speakers(tmp_path)  # a directory: the safetensors copy is preferred
    assert sorted(again) == sorted(speakers)
    for name, voice in speakers.items():
        assert torch.equal(again[name].conditioning, voice.conditioning)
        assert torch.equal(again[name].reference_mel, voice.reference_mel) and again[name].extras == voice.extras

    # a voice chosen by name decodes as transformers does with the same speaker
    model = load_hf(path, part="token2wav")
    codes = codes_of(1, 9, seed=11)
    torch.manual_seed(12)
    with torch.no_grad():
        ref = hf.token2wav(codes, hf.speaker_map["Ethan"]["cond"].float()[None],
                           hf.speaker_map["Ethan"]["ref_mel"].float(), num_steps=3)
        torch.manual_seed(12)
        wav = model.token2wav(codes, conditioning=ethan.conditioning, reference_mel=ethan.reference_mel, steps=3)
    assert peak_error(wav, ref.reshape(1, -1)) < 1e-4
    model.default_voice = ethan  # the codec interface: decode((B, 1, F) codes) in the default voice
    torch.manual_seed(12)
    with torch.no_grad():
        assert torch.equal(model.decode(codes[:, None], steps=3), wav[:, None])


class _RunsCode:
    """Unpickling this calls ``exec``: what a tampered ``spk_dict.pt`` could do."""

    def __reduce__(self):
        return exec, ("import builtins; builtins.TOKEN2WAV_PWNED = True",)


def test_speaker_dictionary_with_code_is_refused(tmp_path) -> None:
    bad = tmp_path / "spk_dict.pt"
    torch.save({"Chelsie": {"cond": torch.zeros(XVEC), "ref_mel": torch.zeros(1, 4, MEL), "x": _RunsCode()}}, bad)
    with pytest.raises(OmnikitValueError, match="refused rather than unpickled"):
        load_speakers(bad)
    import builtins

    assert not hasattr(builtins, "TOKEN2WAV_PWNED")
    torch.save({"Chelsie": {"cond": torch.zeros(XVEC)}}, bad)
    with pytest.raises(OmnikitValueError, match=r"lacks \['ref_mel'\]"):
        load_speakers(bad)
    with pytest.raises(OmnikitValueError, match="not a file or directory"):
        load_speakers(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OmnikitValueError, match=r"neither speakers\.safetensors nor spk_dict\.pt"):
        load_speakers(tmp_path / "empty")


def test_chunked_decoding_equals_offline_with_whole_windows_and_stays_close_with_published_ones(snapshot) -> None:
    _, path = snapshot
    model = load_hf(path, part="token2wav")
    codes, v = codes_of(2, 48, seed=13), voice(14)  # 96 mel frames: 8 chunks of 12; the vocoder needs 36 after one
    assert model.vocoder.context_frames() == 36
    noise = torch.randn(2, 96, MEL, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        offline = model.token2wav(codes, noise=noise, steps=4, **v)
    # windows covering the utterance: the DiT sees what it sees offline; the vocoder's context is its receptive field
    whole = torch.cat(list(model.stream(codes, noise=noise, steps=4, chunk=8, past=96, future=96, **v)), dim=-1)
    assert peak_error(whole, offline) < 1e-5
    # published windows (3 blocks per chunk, 2 back, 1 ahead): close, not equal (the ODE compounds the reach)
    pieces = list(model.stream(codes, noise=noise, steps=4, **v))
    chunked = torch.cat(pieces, dim=-1)
    assert len(pieces) > 2 and chunked.shape == offline.shape
    assert 0 < peak_error(chunked, offline) < 0.05  # 6e-3 with these weights
    # codes pushed one at a time give the same pieces' concatenation
    stream = Token2WavStream(model, batch=2, noise=noise, steps=4, **v)
    pushed = [stream.push(codes[:, i : i + 1]) for i in range(codes.shape[1])] + [stream.finish()]
    assert torch.equal(torch.cat(pushed, dim=-1), chunked)
    first = next(i for i, piece in enumerate(pushed) if piece.shape[-1])
    assert first < codes.shape[1] - 1, "a stream must give audio before the last code"


def test_bad_inputs_are_named(snapshot) -> None:
    _, path = snapshot
    model = load_hf(path, part="token2wav")
    v = voice()
    with pytest.raises(OmnikitValueError, match=r"`codes` expected ids in \[0, 65\)"):
        model.token2wav(torch.full((1, 4), NUM_EMBEDS + 1), **v)
    with pytest.raises(TypeError, match="`codes`"):
        model.token2wav(torch.zeros(1, 4), **v)
    with pytest.raises(ValueError, match="`conditioning`"):
        model.token2wav(codes_of(1, 4), conditioning=torch.zeros(1, XVEC + 1), reference_mel=v["reference_mel"])
    with pytest.raises(ValueError, match="`reference_mel`"):
        model.token2wav(codes_of(1, 4), conditioning=v["conditioning"], reference_mel=torch.zeros(1, 9, MEL + 1))
    with pytest.raises(ValueError, match="`conditioning` expected batch 1 or 2"):
        model.token2wav(codes_of(2, 4), conditioning=torch.zeros(3, XVEC), reference_mel=v["reference_mel"])
    with pytest.raises(ValueError, match="`noise`"):
        model.token2wav(codes_of(1, 4), noise=torch.zeros(1, 4, MEL), **v)
    with pytest.raises(ValueError, match="`lengths`"):
        model.token2wav(codes_of(2, 4), lengths=torch.tensor([4, 5]), **v)
    with pytest.raises(ValueError, match="`chunk` expected a multiple of block_size"):
        Token2WavStream(model, chunk=6, **v)
    short = Token2WavStream(model, noise=torch.randn(1, 10, MEL), **v)
    with pytest.raises(ValueError, match="`noise` expected at least 12 mel frames"):
        short.push(codes_of(1, 6))
        short.finish()
    with pytest.raises(ValueError, match="`codes` expected 1 to"):
        model.token2wav(codes_of(1, 0), **v)
    with pytest.raises(ValueError, match="`conditioning` expected finite"):
        model.token2wav(codes_of(1, 4), conditioning=torch.full((1, XVEC), float("nan")),
                        reference_mel=v["reference_mel"])
    with pytest.raises(TypeError, match=r"`reference_mel` expected dtype torch\.float32"):
        model.token2wav(codes_of(1, 4), conditioning=v["conditioning"], reference_mel=v["reference_mel"].double())
    with pytest.raises(ValueError, match="`reference_mel` expected at least 3 frames"):
        model.token2wav(codes_of(1, 4), conditioning=v["conditioning"], reference_mel=v["reference_mel"][:, :2])
    with pytest.raises(ValueError, match="`steps`"):
        model.token2wav(codes_of(1, 4), steps=1, **v)


def test_published_preset_is_the_published_architecture() -> None:
    dit = dict(hidden_size=1024, num_hidden_layers=22, num_attention_heads=16, head_dim=64, ff_mult=2, emb_dim=512,
               num_embeds=8193, repeats=2, mel_dim=80, block_size=24, look_ahead_layers=[10],
               look_backward_layers=[0, 20], enc_emb_dim=192, enc_dim=128, enc_channels=[256, 256, 256, 256, 768],
               enc_kernel_sizes=[5, 3, 3, 3, 1], enc_dilations=[1, 2, 3, 4, 1], enc_attention_channels=64,
               enc_res2net_scale=2, enc_se_channels=64)
    bigvgan = dict(mel_dim=80, upsample_initial_channel=1536, resblock_kernel_sizes=[3, 7, 11],
                   resblock_dilation_sizes=[[1, 3, 5]] * 3, upsample_rates=[5, 3, 2, 2, 2, 2],
                   upsample_kernel_sizes=[11, 7, 4, 4, 4, 4])
    with torch.device("meta"):
        reference = hf_modeling.Qwen2_5OmniToken2WavModel(
            hf_config.Qwen2_5OmniToken2WavConfig(dit_config=dit, bigvgan_config=bigvgan))
    ours = omnikit.create_model("token2wav_qwen2_5_omni", device="meta")
    assert omnikit.count_parameters(ours) == sum(p.numel() for p in reference.parameters())
    assert ours.sample_rate == 24000 and ours.samples_per_code == 480 and ours.frame_rate == 50
    assert ours.vocoder.context_frames() == 39


def test_first_head_adjacent_pair_rotary_gives_the_scores_of_rotating_pairs_in_place() -> None:
    """``apply_rotary(heads=1, interleaved=True)`` (the DiT's attention) returns the first head de-interleaved; its
    attention scores are those of rotating each adjacent pair ``(x[2j], x[2j+1])`` in place by angle ``t f_j``."""
    from omnikit.layers.rotary import RotaryEmbedding, apply_rotary

    g = torch.Generator().manual_seed(16)
    q, k = torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64), torch.randn(2, 3, 5, 8, generator=g,
                                                                                      dtype=torch.float64)
    rotary = RotaryEmbedding(8, 100.0)
    cos, sin = rotary(torch.arange(5))
    rq, rk = (apply_rotary(x, cos.double(), sin.double(), heads=1, interleaved=True) for x in (q, k))
    assert torch.equal(rq[:, 1:], q[:, 1:])

    def in_place(x: torch.Tensor) -> torch.Tensor:  # complex rotation of adjacent pairs, head 0 only
        angles = torch.arange(5, dtype=torch.float64)[:, None] * rotary.inv_freq.double()
        pairs = torch.view_as_complex(x[:, :1].reshape(2, 1, 5, 4, 2).contiguous()) * torch.polar(
            torch.ones_like(angles), angles)
        return torch.view_as_real(pairs).flatten(-2)

    torch.testing.assert_close(rq[:, :1] @ rk[:, :1].transpose(-1, -2), in_place(q) @ in_place(k).transpose(-1, -2))


def test_the_omni_part_speaks_with_transformers_text_codes_and_waveform(tmp_path) -> None:
    """``load_hf(part="omni")`` with this token2wav as its vocoder: greedy text, Talker codes and the waveform equal
    transformers' ``generate`` (audio in the prompt; the same seed before both, so token2wav draws the same noise)."""
    import test_speak_qwen2_5_omni as speak
    from test_convert_hub_qwen2_5_omni import randomise as randomise_norms

    torch.manual_seed(17)
    config = hf_config.Qwen2_5OmniConfig(thinker_config=speak.THINKER, talker_config=speak.TALKER,
                                         token2wav_config=TOKEN2WAV)
    hf = randomise_norms(hf_modeling.Qwen2_5OmniForConditionalGeneration(config))
    randomise(hf.token2wav, scale=0.2).eval()
    tame(hf.token2wav)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    g = torch.Generator().manual_seed(18)
    speakers = {"Chelsie": {"bos_token": speak.SPEAKER_BOS, "cond": torch.randn(XVEC, generator=g),
                            "ref_mel": torch.randn(16, MEL, generator=g) - 3}}
    torch.save(speakers, tmp_path / "spk_dict.pt")
    hf.speaker_map = speakers
    omni = load_hf(tmp_path, part="omni")
    inputs = speak.prompt(19)
    options = dict(thinker_eos_token_id=speak.IM_END, talker_max_new_tokens=12, talker_do_sample=False)
    with torch.no_grad():
        torch.manual_seed(20)
        sequences, ref = hf.generate(**inputs, speaker="Chelsie", thinker_max_new_tokens=6,
                                     talker_eos_token_id=[speak.CODEC_PAD, speak.CODEC_END],
                                     talker_pixel_values=None, **options)
        torch.manual_seed(20)
        out = omni.generate(**hf_inputs(omni, inputs), max_new_tokens=6, speaker="Chelsie", **options)
    assert torch.equal(out.tokens, sequences[:, inputs["input_ids"].shape[1]:])
    assert out.wav.shape[-1] == ref.shape[-1] == int(out.code_lengths[0]) * omni.vocoder.samples_per_code > 0
    assert peak_error(out.wav.reshape(1, -1), ref.reshape(1, -1)) < 1e-4

    # the stream with token2wav decoding chunk by chunk: the same noise, windows covering the reply -> the offline
    # waveform; the published windows (in blocks) -> close (this reply is shorter than the vocoder's receptive
    # field, so its audio comes in the last chunk; test_chunked_decoding... checks early audio on a longer one)
    torch.manual_seed(20)
    noise = torch.randn(1, 2 * int(out.code_lengths[0]), MEL)
    streams = {}
    for name, windows in (("whole", dict(past=256, future=256)), ("published", {})):
        chunks = list(omni.stream(**hf_inputs(omni, inputs), max_new_tokens=6, speaker="Chelsie", chunk_frames=2,
                                  decoder_options=dict(chunked=True, noise=noise, chunk=4, **windows), **options))
        assert torch.equal(torch.cat([c.codes for c in chunks], dim=2), out.codes)
        streams[name] = (chunks, torch.cat([c.wav for c in chunks], dim=-1))
    assert peak_error(streams["whole"][1].reshape(1, -1), out.wav.reshape(1, -1)) < 1e-5
    assert peak_error(streams["published"][1].reshape(1, -1), out.wav.reshape(1, -1)) < 0.05
