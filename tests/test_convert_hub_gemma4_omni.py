"""Gemma 4's whole model: a tiny random transformers ``Gemma4ForConditionalGeneration`` (E2B-style text
model with per-layer embeddings and KV sharing, a vision tower, an audio tower; bidirectional
attention over images on sliding layers), saved in shards; ``load_hf(path)`` gives transformers'
logits for a left-padded batch holding two images and two audio clips, and greedy decoding equals
transformers' ``generate``."""

from __future__ import annotations

import pytest
import torch
from references import max_rel_error
from test_convert_hub_gemma4 import _randomise
from test_convert_hub_gemma4_audio import AUDIO
from test_convert_hub_gemma4_vision import VISION, _grid

transformers = pytest.importorskip("transformers")

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402

S, F = "sliding_attention", "full_attention"
IMAGE, AUDIO_TOKEN, BOI, EOI, BOA = 60, 61, 62, 63, 59
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=5, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, global_head_dim=16, sliding_window=4, layer_types=[S, F, S, S, F],
            num_kv_shared_layers=2, hidden_size_per_layer_input=8, vocab_size_per_layer_input=64,
            final_logit_softcapping=3.0, use_bidirectional_attention="vision", pad_token_id=0)


def _hf_model():
    torch.manual_seed(0)
    config = transformers.Gemma4Config(text_config=TEXT, vision_config=VISION, audio_config=AUDIO,
                                       image_token_id=IMAGE, audio_token_id=AUDIO_TOKEN, boi_token_id=BOI,
                                       eoi_token_id=EOI, boa_token_id=BOA, eoa_token_index=58, video_token_id=57)
    return _randomise(transformers.Gemma4ForConditionalGeneration(config))


def _inputs():
    g = torch.Generator().manual_seed(4)
    pixels = torch.rand(2, 24, 12, generator=g)
    pixels[1, 16:] = 0
    positions = torch.stack((_grid(6, 4, 24), _grid(4, 4, 24)))  # 6 and 4 image tokens
    features = torch.randn(2, 37, 16, generator=g)
    fmask = torch.ones(2, 37, dtype=torch.bool)
    fmask[1, 23:] = False  # 10 and 6 audio tokens

    def text(n):
        return torch.randint(1, 56, (n,), generator=g).tolist()

    rows = [[0, 0] + text(1) + [BOI] + [IMAGE] * 6 + [EOI] + text(2) + [BOA] + [AUDIO_TOKEN] * 10 + text(2),
            text(1) + [BOI] + [IMAGE] * 4 + [EOI] + text(3) + [BOA] + [AUDIO_TOKEN] * 6 + text(9)]
    ids = torch.tensor(rows)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    types = (ids == IMAGE).long() + 3 * (ids == AUDIO_TOKEN).long()
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "image_position_ids": positions,
            "input_features": features, "input_features_mask": fmask, "mm_token_type_ids": types}


def test_whole_model_with_images_and_audio_gives_transformers_logits(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    model = load_hf(tmp_path / "hf")
    inputs = _inputs()
    with torch.no_grad():
        ref = hf(**inputs).logits
        ours = model(**hf_inputs(model, inputs))
        text_only = {k: inputs[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        no_media = hf(**text_only).logits  # placeholders embed as padding
    mask = inputs["attention_mask"]
    assert max_rel_error(ours, ref, mask) <= 1e-4
    assert max_rel_error(no_media, ref, mask) > 1e-2  # the media really enter the logits
    save_hf(model, tmp_path / "back", max_shard_size="20KB")
    again = transformers.Gemma4ForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert max_rel_error(again(**inputs).logits, ref, mask) <= 1e-4
    with torch.no_grad():
        assert max_rel_error(model(**hf_inputs(model, text_only)), no_media, mask) <= 1e-4


def test_whole_model_greedy_decoding_matches_transformers_generate(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    model = load_hf(tmp_path)
    inputs = _inputs()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ref = hf.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    kwargs = hf_inputs(model, inputs)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model.generate(kwargs.pop("input_ids"), positions=positions, next_position=mask.sum(-1), max_new_tokens=6,
                         **kwargs)
    assert torch.equal(out.tokens, ref)


def test_parallel_plans_cover_the_gemma4_classes(tmp_path):
    from omnikit.distributed.plan import collect_plan

    _hf_model().save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    plan = collect_plan(model)
    units = [*model.lm.decoder.blocks, *model.vision.blocks, *model.audio.blocks, model.vision, model.audio]
    assert all(any(u is v for v in plan.fsdp_units) for u in units)
    # attention is split by heads only where no layer shares its keys/values: layers 0 (own cache) only
    assert "lm.decoder.blocks.0.attn.qkv" in plan.tp and "lm.decoder.blocks.1.attn.qkv" not in plan.tp
    assert not any(k.startswith("lm.decoder.blocks.3.attn") for k in plan.tp)
    assert "lm.decoder.blocks.4.mlp.down" in plan.tp and "lm.lm_head" in plan.tp


def test_video_inputs_and_placeholder_mismatches_are_refused(tmp_path):
    _hf_model().save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    inputs = _inputs()
    with pytest.raises(ValueError, match="pixel_values_videos"):
        hf_inputs(model, {**inputs, "pixel_values_videos": torch.zeros(1, 4, 12)})
    kwargs = hf_inputs(model, inputs)
    kwargs["input_ids"] = kwargs["input_ids"].masked_fill(kwargs["input_ids"] == IMAGE, 5)  # no image slots left
    with pytest.raises(ValueError, match="holds 0 image placeholder tokens but the image encoder gave"):
        model(**kwargs)


@pytest.mark.parametrize(("top", "text"), [(False, True), (True, False)])
def test_the_top_level_tie_word_embeddings_ties_the_head(tmp_path, top, text):
    """transformers ties ``Gemma4ForConditionalGeneration``'s ``lm_head`` by the top-level
    ``tie_word_embeddings`` (the text config's is not read); so does load_hf."""
    torch.manual_seed(0)
    config = transformers.Gemma4Config(text_config={**TEXT, "tie_word_embeddings": text}, vision_config=None,
                                       audio_config=None, tie_word_embeddings=top)
    hf = _randomise(transformers.Gemma4ForConditionalGeneration(config))
    with torch.no_grad():
        hf.lm_head.weight.copy_(0.5 * torch.randn(hf.lm_head.weight.shape))  # differs from the embeddings if untied
    hf.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert (model.lm.lm_head.weight is model.lm.embed.weight) == top
    ids = torch.randint(1, 56, (2, 9))
    with torch.no_grad():
        assert max_rel_error(model(ids), hf(input_ids=ids).logits, torch.ones_like(ids)) <= 1e-4


@pytest.mark.parametrize(("where", "key", "value"), [
    ("text_config", "attention_dropout", 0.1), ("text_config", "use_bidirectional_attention", "all"),
    ("audio_config", "attention_context_right", 4), ("audio_config", "hidden_act", "gelu"),
    ("vision_config", "attention_bias", True), ("vision_config", "rope_parameters", {"rope_type": "default"}),
])
def test_structural_options_outside_the_model_are_refused_by_name(tmp_path, where, key, value):
    _hf_model().save_pretrained(tmp_path)
    import json

    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config[where][key] = value
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=key):
        load_hf(tmp_path)
