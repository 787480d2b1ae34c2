"""Qwen3.5 / Qwen3.5-MoE vision-language models: tiny random transformers models (randomised norms, A_log,
dt_bias, gates and biases) saved in shards load with transformers' logits on a left-padded batch holding
images and a video (interleaved M-RoPE on the partial rotary dims), decode like ``generate``, round-trip
through save_hf -> from_pretrained, and load part by part."""

from __future__ import annotations

import pytest
import torch
from references import max_rel_error, randomise_hybrid
from torch.nn.utils.rnn import pad_sequence

transformers = pytest.importorskip("transformers")

from omnikit import create_model  # noqa: E402
from omnikit.convert import from_transformers, hf_inputs, load_hf, save_hf  # noqa: E402
from omnikit.fusion import Qwen3_5VL  # noqa: E402
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts  # noqa: E402
from omnikit.models import CausalLM  # noqa: E402
from omnikit.vision import Qwen3ViT, patchify_frames  # noqa: E402

VOCAB, IMAGE, VIDEO, V_START, V_END = 64, 60, 61, 62, 63  # as in the qwen3_5_vl_tiny preset
ARCHITECTURES = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")
VISION = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=4,
              temporal_patch_size=2, num_position_embeddings=16)


def _text_config(architecture: str) -> dict:
    # 12 rotary dims of 16 (partial factor 0.75): 6 frequencies under interleaved sections 3/2/1
    config = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                  linear_key_head_dim=8, linear_value_head_dim=8, rms_norm_eps=1e-6,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.75,
                                   "mrope_section": [3, 2, 1], "mrope_interleaved": True})
    if architecture == "Qwen3_5ForConditionalGeneration":
        return dict(intermediate_size=40, **config)
    return dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                **config)


def _hf_model(architecture: str):
    config_class = getattr(transformers, architecture.replace("ForConditionalGeneration", "Config"))
    config = config_class(text_config=_text_config(architecture), vision_config=VISION, image_token_id=IMAGE,
                          video_token_id=VIDEO, vision_start_token_id=V_START, vision_end_token_id=V_END)
    torch.manual_seed(0)
    return randomise_hybrid(getattr(transformers, architecture)(config))


def _batch(seed: int = 7) -> dict[str, torch.Tensor]:
    """What the Qwen3.5 processor returns, built by hand, left padded: row 0 text, a 2x3 image, text and a
    2-step video (each step after its timestamp text, between markers), row 1 a 2x2 image, row 2 text only."""
    g = torch.Generator().manual_seed(seed)
    media: dict[str, list] = {"image": [], "video": []}

    def text(n: int) -> list[int]:
        return torch.randint(0, IMAGE, (n,), generator=g).tolist()

    def visual(kind: str, frames: int, height: int, width: int) -> list[int]:
        clip = torch.randn(1, frames, 3, height, width, generator=g)
        pixels, grid = patchify_frames(clip, torch.tensor([frames]), (2, 4, 4), 2)
        media[kind].append((pixels, grid))
        t, h, w = (int(v) for v in grid[0])
        step = [V_START, *[IMAGE if kind == "image" else VIDEO] * (h * w // 4), V_END]
        return step if kind == "image" else [tok for _ in range(t) for tok in text(1) + step]

    rows = [text(3) + visual("image", 1, 16, 24) + text(2) + visual("video", 4, 16, 8) + text(2),
            text(2) + visual("image", 1, 8, 8) + text(3),
            text(5)]
    ids = [torch.tensor(r).flip(0) for r in rows]
    input_ids = pad_sequence(ids, batch_first=True).flip(1)
    out = {"input_ids": input_ids,
           "attention_mask": pad_sequence([torch.ones_like(r) for r in ids], batch_first=True).flip(1),
           "mm_token_type_ids": (input_ids == IMAGE).long() + 2 * (input_ids == VIDEO).long()}
    for kind, key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        out[key] = torch.cat([p for p, _ in media[kind]])
        out[f"{kind}_grid_thw"] = torch.cat([grid for _, grid in media[kind]])
    return out


@pytest.fixture(scope="module", params=ARCHITECTURES)
def checkpoint(request, tmp_path_factory):
    hf = _hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    return hf, path


def test_sharded_checkpoint_loads_with_transformers_logits_and_round_trips(checkpoint, tmp_path):
    hf, path = checkpoint
    model = load_hf(path)
    assert isinstance(model, Qwen3_5VL) and not model.vision_encoder.config.deepstack_indexes
    batch = _batch()
    mask = batch["attention_mask"]
    with torch.no_grad():
        ref = hf(**batch).logits
        assert max_rel_error(model(**hf_inputs(model, batch)), ref, mask) <= 1e-4
        text_only = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        text_only["input_ids"] = text_only["input_ids"].clamp(max=IMAGE - 1)
        assert max_rel_error(model(**hf_inputs(model, text_only)), hf(**text_only).logits, mask) <= 1e-4
    save_hf(model, tmp_path / "back", max_shard_size="20KB")
    again = type(hf).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert max_rel_error(again(**batch).logits, ref, mask) <= 1e-4


def test_greedy_decoding_matches_transformers_generate_dynamic_and_static(checkpoint):
    """Images and a video in the prompt, left padding: the positions continue after the largest media id."""
    hf, path = checkpoint
    model = load_hf(path)
    batch = _batch(8)
    new = 6
    # omnikit never generates a placeholder id; transformers is told the same
    ref = hf.generate(**batch, max_new_tokens=new, do_sample=False, pad_token_id=0,
                      suppress_tokens=[IMAGE, VIDEO])[:, batch["input_ids"].shape[1]:]
    for cache in ("dynamic", "static"):
        assert torch.equal(model.generate(**hf_inputs(model, batch), max_new_tokens=new, cache=cache).tokens, ref)


def test_mtp_tensors_are_skipped_by_rule(checkpoint, tmp_path):
    """A published checkpoint's ``mtp.*`` tensors (multi-token prediction, not modelled) load by rule and are
    not written back."""
    import json
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    _, path = checkpoint
    shutil.copytree(path, tmp_path / "ckpt")
    save_file({"mtp.fc.weight": torch.zeros(32, 64), "mtp.layers.0.mlp.experts.3.up_proj.weight": torch.zeros(2, 2)},
              str(tmp_path / "ckpt" / "mtp.safetensors"))
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    index["weight_map"].update({"mtp.fc.weight": "mtp.safetensors",
                                "mtp.layers.0.mlp.experts.3.up_proj.weight": "mtp.safetensors"})
    (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(json.dumps(index))
    out = save_hf(load_hf(tmp_path / "ckpt"), tmp_path / "back")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("mtp.")]  # noqa: SIM118 (a safetensors handle)


def test_parts_load_alone(checkpoint):
    hf, path = checkpoint
    tower = load_hf(path, part="vision_encoder").eval()
    assert isinstance(tower, Qwen3ViT)
    batch = _batch()
    lm = load_hf(path, part="text_model")
    assert isinstance(lm, CausalLM)
    text_only = {"input_ids": batch["input_ids"].clamp(max=IMAGE - 1), "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        ref = hf.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"]).pooler_output
        video = {k: batch[k] for k in ("pixel_values_videos", "video_grid_thw")}
        out = tower.forward_patches(**hf_inputs(tower, video))
        assert max_rel_error(out.hidden_states, ref, torch.ones(ref.shape[0], dtype=torch.bool)) <= 1e-5
        converted = from_transformers(hf.model.visual).forward_patches(**hf_inputs(tower, video))
        assert torch.equal(converted.hidden_states, out.hidden_states)
        logits = lm(**hf_inputs(lm, text_only))
        assert max_rel_error(logits, hf(**text_only).logits, text_only["attention_mask"]) <= 1e-4


def test_tiny_preset_saves_to_transformers(tmp_path):
    """The preset written by save_hf gives its logits in transformers, on prompts OmniPrompt writes the way the
    Qwen3.5 processor does (a timestamp before every video step)."""
    model = create_model("qwen3_5_vl_tiny").eval()
    save_hf(model, tmp_path)
    hf = transformers.Qwen3_5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [OmniPrompt(model, generator=g).text(2).image(16, 8).text(3).video(6, 8, 16, step_text=2).text(1),
               OmniPrompt(model, generator=g).text(4).image(8, 8).text(2)]
    batch = collate_prompts(prompts)
    ids = batch["input_ids"]
    batch["mm_token_type_ids"] = (ids == IMAGE).long() + 2 * (ids == VIDEO).long()
    with torch.no_grad():
        ours = model(**hf_inputs(model, batch))
        assert max_rel_error(ours, hf(**batch).logits, batch["attention_mask"]) <= 1e-4


def test_a_moe_model_built_from_parts_saves_to_transformers(tmp_path):
    """save_hf of a Qwen3_5VL whose MLPs are gated-shared-expert MoE layers writes the Qwen3.5-MoE layout."""
    from omnikit.fusion import Thinker
    from omnikit.moe import MoE, MoEConfig

    dense = create_model("qwen3_5_vl_tiny")
    moe = MoEConfig(32, 4, 2, 16, shared_hidden=16, shared_gate=True)
    text = Thinker(dense.text_model.config, lambda _: MoE(moe), media_tokens=dense.text_model.media_tokens)
    model = Qwen3_5VL(text, vision_encoder=dense.vision_encoder, marker_tokens=dense.marker_tokens).eval()
    save_hf(model, tmp_path)
    hf = transformers.Qwen3_5MoeForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert hf.config.vision_config.model_type == "qwen3_5_moe_vision"
    batch = _batch()
    with torch.no_grad():
        assert max_rel_error(model(**hf_inputs(model, batch)), hf(**batch).logits, batch["attention_mask"]) <= 1e-4


PUBLISHED = {
    "qwen3_5_9b_vl": ("Qwen3_5ForConditionalGeneration", 4096, dict(
        intermediate_size=12288, num_hidden_layers=32, num_key_value_heads=4)),
    "qwen3_5_35b_a3b_vl": ("Qwen3_5MoeForConditionalGeneration", 2048, dict(
        num_hidden_layers=40, num_key_value_heads=2, num_experts=256, num_experts_per_tok=8,
        moe_intermediate_size=512, shared_expert_intermediate_size=512)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_equal_transformers(name):
    architecture, width, values = PUBLISHED[name]
    text = dict(vocab_size=248320, hidden_size=width, num_attention_heads=16, head_dim=256, linear_num_key_heads=16,
                linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128, **values)
    config_class = getattr(transformers, architecture.replace("ForConditionalGeneration", "Config"))
    config = config_class(text_config=text, vision_config={"out_hidden_size": width})
    with torch.device("meta"):
        reference = getattr(transformers, architecture)(config)
    ours = create_model(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_bad_layouts_are_refused():
    model = create_model("qwen3_5_vl_tiny")
    with pytest.raises(ValueError, match="deepstack"):
        Qwen3_5VL(model.text_model, vision_encoder=create_model("qwen3_vit_tiny", out_dim=32, deepstack_indexes=(0,)))
    with pytest.raises(ValueError, match="out_dim"):
        Qwen3_5VL(model.text_model, vision_encoder=create_model("qwen3_vit_tiny", out_dim=16))
    with pytest.raises(ValueError, match="`attention_mask` expected None"):
        model.text_model.decoder(torch.zeros(1, 3, 32), attention_mask=torch.ones(1, 1, 3, 3, dtype=torch.bool))
    from omnikit.convert.hub_qwen3_5_vl import text_config

    text = _text_config("Qwen3_5ForConditionalGeneration")
    text["rope_parameters"] = dict(text["rope_parameters"], mrope_section=[3, 3, 3])  # 9 != 12 / 2 rotary frequencies
    with pytest.raises(ValueError, match="mrope_section"):
        text_config({"architectures": ["Qwen3_5ForConditionalGeneration"], "text_config": text})
    batch = _batch()
    with pytest.raises(ValueError, match="use_audio_in_video"):
        model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}, use_audio_in_video=True)


def test_lora_and_parallel_plan_cover_the_vision_tower():
    from omnikit.distributed.plan import collect_plan
    from omnikit.fusion.towers import lora_targets, tower_parameters

    model = create_model("qwen3_5_vl_tiny")
    towers = tower_parameters(model)
    assert all(n.startswith("vision_encoder.") for n in towers["vision"] + towers["projector"])
    assert any(n.startswith("vision_encoder.merger.") for n in towers["projector"])
    targets = lora_targets(model, towers=("vision", "thinker", "projector"))["target_modules"]
    assert {"vision_encoder.blocks.0.attn.qkv", "vision_encoder.blocks.1.mlp.fc2", "vision_encoder.merger.mlp.0",
            "text_model.decoder.blocks.0.mixer.qkv", "text_model.decoder.blocks.3.attn.qkv"} <= set(targets)
    units = collect_plan(model).fsdp_units
    assert {id(b) for b in model.vision_encoder.blocks} | {id(model.vision_encoder)} <= {id(u) for u in units}
