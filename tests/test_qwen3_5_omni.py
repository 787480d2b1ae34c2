"""The Qwen3.5-Omni-style assembly (issue 23 item 6): a hybrid MoE Thinker (Gated DeltaNet + gated full
attention, TMRoPE on the partial rotary dims) with the AuT and a vision tower, the MoE Talker and Code2Wav.

- decoders report the positions their open stream holds through one property (attention or DeltaNet);
- the hybrid Thinker with audio and an image in the prompt, run as a chunked prefill then one position at a
  time (dynamic and static caches), equals its full forward;
- the tiny model speaks: the stream adds up to the offline waveform; static caches equal dynamic ones;
- the published-ish preset's parameter count equals the sum of transformers' meta models of its parts
  (the number printed in docs/thinker_talker.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from qwen3_omni_reference import PUBLISHED, rel_err

import omnikit
from omnikit.fusion import HybridOmniThinker, Qwen3_5OmniSpeech
from omnikit.fusion.presets import TINY_OMNI_MARKERS, TINY_OMNI_TOKENS, TINY_SPEECH_IDS
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.models.prefill import prefill
from omnikit.vision import patchify_frames

#: The parameter count of ``qwen3_5_omni_35b_a3b`` (docs/thinker_talker.md prints it).
PRESET_PARAMETERS = 39_295_722_161


@pytest.fixture(scope="module")
def tiny() -> Qwen3_5OmniSpeech:
    torch.manual_seed(0)
    model = omnikit.create_model("qwen3_5_omni_tiny").eval()
    with torch.no_grad():  # randomise the 1 + w norms and the gates that start at 0 / 1, so layout bugs show
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith(("A_log", "dt_bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def test_decoders_report_their_cached_positions() -> None:
    lm = omnikit.create_model("decoder_tiny").eval()
    hybrid = HybridDecoder(HybridConfig(dim=16, depth=2, num_heads=2, linear_heads=2, chunk_size=4)).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        for decoder, run in ((lm.decoder, lambda n: lm(torch.zeros(2, n, dtype=torch.long))),
                             (hybrid, lambda n: hybrid(x[:, :n]))):  # the second has no attention block
            assert decoder.cache_length == 0
            for max_len in (None, 8):
                with decoder.streaming(2, max_len=max_len) if decoder is hybrid else lm.streaming(2, max_len=max_len):
                    run(3)
                    run(1)
                    assert decoder.cache_length == 4
                    position = decoder.cache_position
                    assert int(position) == 4 and isinstance(position, torch.Tensor) == (max_len is not None)
                assert decoder.cache_length == 0


def test_hybrid_decoder_refuses_masks_its_recurrence_cannot_read() -> None:
    hybrid = HybridDecoder(HybridConfig(dim=16, depth=1, num_heads=2, chunk_size=4))
    with pytest.raises(ValueError, match="attention_mask"):
        hybrid(torch.randn(1, 3, 16), attention_mask=torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="HybridConfig"):
        HybridOmniThinker(omnikit.create_model("qwen3_omni_thinker_tiny").text_model, audio_encoder=None,
                          vision_encoder=None, scheme=omnikit.fusion.QWEN3_OMNI)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_thinker_with_audio_and_image_decodes_step_by_step(tiny, static) -> None:
    """Chunked prefill (chunks of 3, left padding across several) then one position at a time, with the
    Thinker's TMRoPE ids, equals the full forward at every valid position after the prefill."""
    thinker = tiny.thinker
    inputs = thinker.contract_inputs([31, 24]).kwargs  # left-padded: audio, images, a video (item 0)
    ids = inputs["input_ids"]
    batch, length = ids.shape
    assert {TINY_OMNI_TOKENS.audio, TINY_OMNI_TOKENS.image} <= set(ids.unique().tolist())
    with torch.no_grad():
        full = thinker(**inputs)
        fused = thinker.fuse(**inputs)
        lm, mask, positions = thinker.text_model, fused.key_padding_mask, fused.positions
        embeds = lm.embed_inputs(ids, fused.media, mask)
        split = length - 6
        with lm.streaming(batch, max_len=length + 4 if static else None):
            last = prefill(lm.decoder, embeds[:, :split], chunk=3, positions=positions[..., :split],
                           key_padding_mask=mask[:, :split])
            steps = [lm.lm_head(last)]
            for t in range(split, length):
                assert lm.decoder.cache_length == t
                hidden = lm.decoder(embeds[:, t : t + 1], positions=positions[..., t : t + 1],
                                    key_padding_mask=mask[:, : t + 1])
                steps.append(lm.lm_head(hidden[:, -1]))
    stepped = torch.stack(steps, dim=1)
    assert mask[:, split - 1 :].all()
    assert rel_err(stepped, full[:, split - 1 :]) < 1e-5


@pytest.mark.parametrize("name", ["qwen3_5_omni_tiny", "qwen3_5_omni_35b_a3b"])
def test_tmrope_tables_equal_qwen3_5_interleaved_partial_rotary(tiny, name) -> None:
    """The Thinker's rotary tables on TMRoPE ids of an audio + image + video prompt equal transformers'
    Qwen3.5-MoE M-RoPE (interleaved sections on the partial rotary dims) for the same config values."""
    pytest.importorskip("transformers")
    from transformers import Qwen3_5MoeTextConfig
    from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeTextRotaryEmbedding

    model = tiny if name == "qwen3_5_omni_tiny" else omnikit.create_model(name, device="meta")
    config = model.thinker.text_model.config
    positions = tiny.thinker.fuse(**tiny.thinker.contract_inputs([31, 24]).kwargs).positions * 97  # large ids
    reference = Qwen3_5MoeTextRotaryEmbedding(Qwen3_5MoeTextConfig(
        hidden_size=config.dim, num_attention_heads=config.num_heads, head_dim=config.head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_base, "mrope_interleaved": True,
                         "mrope_section": list(config.mrope_sections),
                         "partial_rotary_factor": config.rotary_dim / config.head_dim}))
    # the preset's tables, rebuilt on the CPU from its config (a meta build holds no values)
    rotary = RotaryEmbedding(config.head_dim, config.rope_base, sections=config.mrope_sections,
                             interleaved=config.mrope_interleaved, rotary_dim=config.rotary_dim)
    assert repr(rotary) == repr(model.thinker.text_model.decoder.rotary)
    cos, sin = rotary(positions)
    ref_cos, ref_sin = reference(torch.zeros(1), positions)
    assert cos.shape[-1] == config.rotary_dim
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


def test_chunked_prefill_into_static_caches_zeroes_padding_in_every_chunk() -> None:
    """``generate(prefill_chunk=, cache="static")`` of a left-padded batch whose padding spans several chunks:
    the DeltaNet blocks read each chunk's padding columns, so the tokens equal the unchunked dynamic ones."""
    torch.manual_seed(0)
    lm = omnikit.create_model("qwen3_5_moe_tiny").eval()
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :7] = False
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    options = dict(key_padding_mask=mask, positions=positions, next_position=positions[:, -1] + 1, max_new_tokens=4)
    reference = lm.generate(ids, **options)
    chunked = lm.generate(ids, prefill_chunk=3, cache="static", **options)
    assert torch.equal(chunked.tokens, reference.tokens)
    assert rel_err(chunked.hidden, reference.hidden) < 1e-5


def speech_prompt(model: Qwen3_5OmniSpeech, seed: int) -> dict[str, torch.Tensor]:
    """A user turn with an audio clip, a 16 x 16 image (4 tokens) and text, then the assistant's generation
    prompt, in the tiny model's ids."""
    g = torch.Generator().manual_seed(seed)
    ids, audio_encoder = TINY_SPEECH_IDS, model.thinker.audio_encoder
    frames = 120
    tokens = int(audio_encoder.output_lengths(torch.tensor([frames])))
    text = torch.randint(0, 100, (6,), generator=g).tolist()
    markers = TINY_OMNI_MARKERS
    prompt = [ids.im_start, ids.user, *text[:3], markers["audio_start_token_id"], *[TINY_OMNI_TOKENS.audio] * tokens,
              markers["audio_end_token_id"], markers["vision_start_token_id"], *[TINY_OMNI_TOKENS.image] * 4,
              markers["vision_end_token_id"], *text[3:], ids.im_end, ids.im_start, ids.assistant, 9]
    pixels, grid = patchify_frames(torch.randn(1, 1, 3, 16, 16, generator=g), torch.tensor([1]), (2, 4, 4), 2)
    mels = audio_encoder.config.n_mels
    return {"input_ids": torch.tensor([prompt]), "attention_mask": torch.ones(1, len(prompt), dtype=torch.long),
            "input_features": torch.randn(1, mels, frames, generator=g),
            "feature_attention_mask": torch.ones(1, frames, dtype=torch.long), "pixel_values": pixels,
            "image_grid_thw": grid}


OPTIONS = dict(max_new_tokens=5, talker_do_sample=False, talker_max_new_tokens=10)


def test_streamed_speech_equals_offline(tiny) -> None:
    inputs = speech_prompt(tiny, 1)
    offline = tiny.generate(**inputs, **OPTIONS)
    assert offline.tokens.shape == (1, 5) and offline.codes.shape[:2] == (1, 3)
    assert offline.codes.shape[-1] > 3, "the random Talker ended too early to test chunking"
    chunks = list(tiny.stream(**inputs, chunk_frames=3, **OPTIONS))  # Code2Wav streams: its state carries over
    assert chunks[0].codes.shape[-1] == 3 and chunks[0].wav.shape[-1] > 0
    assert torch.equal(torch.cat([c.text_tokens for c in chunks], dim=1), offline.tokens)
    assert torch.equal(torch.cat([c.codes for c in chunks], dim=2), offline.codes)
    streamed = torch.cat([c.wav for c in chunks], dim=-1)
    assert streamed.shape == offline.wav.shape and rel_err(streamed, offline.wav) < 1e-5


def test_static_caches_speak_as_dynamic_ones(tiny) -> None:
    """The Thinker's DeltaNet states and KV caches, the Talker's and the code predictor's caches preallocated."""
    inputs = speech_prompt(tiny, 2)
    dynamic = tiny.generate(**inputs, **OPTIONS)
    static = tiny.generate(**inputs, cache="static", **OPTIONS)
    assert torch.equal(static.tokens, dynamic.tokens) and torch.equal(static.codes, dynamic.codes)
    assert rel_err(static.wav, dynamic.wav) < 1e-6
    torch._dynamo.reset()  # every decode step (Thinker, Talker, code predictor) traced with fullgraph=True
    compiled = tiny.generate(**inputs, cache="static", compile={"backend": "eager"}, **OPTIONS)
    assert torch.equal(compiled.tokens, dynamic.tokens) and torch.equal(compiled.codes, dynamic.codes)


def test_joint_forward_trains_thinker_and_talker(tiny) -> None:
    inputs = tiny.contract_inputs([11, 8])
    out = tiny(**inputs.kwargs)
    assert out.log_probs.shape == (2, inputs.kwargs["input_ids"].shape[1], 3)
    assert out.logits.shape[-1] == tiny.thinker.text_model.config.vocab_size
    assert not any(p.requires_grad for p in tiny.vocoder.parameters())  # the codec trains on its own
    with pytest.raises(ValueError, match="codes"):
        tiny(**{**inputs.kwargs, "codes": inputs.kwargs["codes"][:, :2]})


def test_joint_forward_reads_an_earlier_thinker_layer(tiny) -> None:
    """An ``accept_hidden_layer`` below the depth (the published presets') is read from that block's output."""
    inputs = tiny.contract_inputs([9, 7]).kwargs
    earlier = Qwen3_5OmniSpeech(tiny.thinker, tiny.talker, tiny.vocoder,
                                dataclasses.replace(TINY_SPEECH_IDS, accept_hidden_layer=2))
    with torch.no_grad():
        final, second = tiny(**inputs), earlier(**inputs)
    assert torch.equal(second.logits, final.logits)  # the Thinker's own output is the same
    assert torch.isfinite(second.log_probs).all() and not torch.allclose(second.log_probs, final.log_probs)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_preset_count_equals_transformers_parts() -> None:
    """Text model: transformers' Qwen3.5-MoE (35B-A3B values); vision: its Qwen3.5-MoE tower (out 2048); AuT,
    Talker, Code2Wav: Qwen3-Omni-30B-A3B's. All built on the meta device from published values."""
    pytest.importorskip("transformers")
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
    from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeVisionConfig
    from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeVisionModel
    from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as omni_config
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as omni

    ours = omnikit.create_model("qwen3_5_omni_35b_a3b", device="meta")
    with torch.device("meta"):
        text = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(
            vocab_size=248320, hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2,
            head_dim=256, num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
            shared_expert_intermediate_size=512, linear_num_key_heads=16, linear_num_value_heads=32,
            linear_key_head_dim=128, linear_value_head_dim=128))
        vision = Qwen3_5MoeVisionModel(Qwen3_5MoeVisionConfig(out_hidden_size=2048))
        audio = omni.Qwen3OmniMoeAudioEncoder(omni_config.Qwen3OmniMoeAudioEncoderConfig(**PUBLISHED["audio"]))
        talker = omni.Qwen3OmniMoeTalkerForConditionalGeneration(omni_config.Qwen3OmniMoeTalkerConfig(
            text_config=PUBLISHED["talker_text"], code_predictor_config=PUBLISHED["code_predictor"],
            **PUBLISHED["talker"]))
        code2wav = omni.Qwen3OmniMoeCode2Wav(omni_config.Qwen3OmniMoeCode2WavConfig(**PUBLISHED["code2wav"]))
    assert omnikit.count_parameters(ours.thinker.text_model) == _count(text)
    assert omnikit.count_parameters(ours.thinker.vision_encoder) == _count(vision)
    assert omnikit.count_parameters(ours) == sum(_count(m) for m in (text, vision, audio, talker, code2wav))
    assert omnikit.count_parameters(ours) == PRESET_PARAMETERS
    docs = Path(__file__).resolve().parents[1] / "docs" / "thinker_talker.md"
    assert f"{PRESET_PARAMETERS:,}" in docs.read_text()
