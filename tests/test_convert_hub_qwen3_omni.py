"""load_hf / save_hf on a Qwen3-Omni checkpoint (tiny random transformers model, sharded): the Thinker gives
transformers' logits on processor-style inputs (several images, a video, audio, audio-in-video, left padding),
each part equals its transformers module, loads open only the part's shards, and saving a part writes back
the checkpoint's own tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from qwen3_omni_reference import TINY_FULL, assert_within_reference_rounding, randomise, rel_err, tame_code2wav
from safetensors import safe_open
from torch.nn.utils.rnn import pad_sequence

from omnikit.audio import AuTEncoder, Code2Wav
from omnikit.convert import hf_inputs, load_hf, save_hf
from omnikit.convert import snapshot as snapshot_module
from omnikit.fusion import DeepstackThinker, Qwen3OmniTalker, Qwen3OmniThinker, VisualGrid, item_positions
from omnikit.vision import DeepstackOutput, Qwen3ViT, patchify_frames

pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeForConditionalGeneration,
)

AUDIO, IMAGE, VIDEO, V_START, V_END, A_START, A_END = range(150, 157)  # as in TINY_FULL
PREFIXES = {"thinker": "thinker.", "text_model": ("thinker.model.", "thinker.lm_head."),
            "audio_encoder": "thinker.audio_tower.", "vision_encoder": "thinker.visual.", "talker": "talker.",
            "code2wav": "code2wav."}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Qwen3OmniMoeForConditionalGeneration, Path]:
    config = Qwen3OmniMoeConfig(**TINY_FULL)
    torch.manual_seed(0)
    model = randomise(Qwen3OmniMoeForConditionalGeneration(config).eval(), scale=0.3)
    tame_code2wav(model.code2wav, 20, 4)
    path = tmp_path_factory.mktemp("qwen3_omni")
    model.save_pretrained(path, max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists()
    for sub in (model.thinker.model.visual, model.thinker.model.audio_tower, model.talker, model.talker.code_predictor,
                model.talker.code_predictor.model, model.talker.model, model.code2wav):
        sub.config._attn_implementation = "eager"
    return model, path


def test_vision_part_matches(checkpoint) -> None:
    hf, path = checkpoint
    tower = load_hf(path, part="vision_encoder").eval()
    assert isinstance(tower, Qwen3ViT) and tower.config.deepstack_indexes == (0, 1)
    g = torch.Generator().manual_seed(1)
    grid = torch.tensor([[1, 4, 6], [2, 2, 2]])  # an image and a 4-frame video
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 4 * 4, generator=g)
    with torch.no_grad():
        ref = hf.thinker.model.visual(pixels, grid_thw=grid)
        out = tower.forward_patches(**hf_inputs(tower, {"pixel_values": pixels, "image_grid_thw": grid}))
    assert rel_err(out.hidden_states, ref.pooler_output) < 1e-5
    assert all(rel_err(a, b) < 1e-5 for a, b in zip(out.deepstack, ref.deepstack_features, strict=True))


def test_audio_part_matches(checkpoint) -> None:
    hf, path = checkpoint
    tower = load_hf(path, part="audio_encoder").eval()
    assert isinstance(tower, AuTEncoder)
    features = torch.randn(1, 16, 237, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf.thinker.model.audio_tower(features[0], feature_lens=torch.tensor([237])).last_hidden_state
        out = tower(**hf_inputs(tower, {"input_features": features,
                                        "feature_attention_mask": torch.ones(1, 237, dtype=torch.long)}))
    assert out.hidden_states.shape[1] == ref.shape[0]
    assert rel_err(out.hidden_states[0], ref) < 1e-5


def test_talker_part_matches(checkpoint) -> None:
    hf, path = checkpoint
    talker = load_hf(path, part="talker").eval()
    assert isinstance(talker, Qwen3OmniTalker)
    g = torch.Generator().manual_seed(3)
    embeds = torch.randn(2, 7, 32, generator=g)
    hidden = torch.randn(3, 32, generator=g)
    codes = torch.randint(0, 20, (3, 4), generator=g)
    pred = hf.talker.code_predictor
    with torch.no_grad():
        ref = hf.talker(inputs_embeds=embeds).logits
        seq = torch.stack([hidden, hf.talker.model.codec_embedding(codes[:, 0]),
                           *(pred.model.codec_embedding[k - 1](codes[:, k]) for k in (1, 2))], dim=1)
        states = pred.model(inputs_embeds=seq).last_hidden_state
        ref_residual = torch.stack([pred.lm_head[k](states[:, k + 1]) for k in range(3)], dim=1)
        logits, _ = talker.codec_logits(embeds)
        residual = talker.residual_logits(hidden, codes)
    assert rel_err(logits, ref) < 1e-5
    assert rel_err(residual, ref_residual) < 1e-5


def test_code2wav_part_matches(checkpoint) -> None:
    hf, path = checkpoint
    decoder = load_hf(path, part="code2wav").eval()
    assert isinstance(decoder, Code2Wav)
    codes = torch.randint(0, 20, (2, 4, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf.code2wav(codes)
        wav = decoder.decode(codes)
    assert (ref.abs() < 1).float().mean() > 0.5
    assert_within_reference_rounding(wav, hf.code2wav, lambda m: m(codes))


def test_part_loads_open_only_their_shards(checkpoint, monkeypatch) -> None:
    _, path = checkpoint
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    opened: list[str] = []
    original = snapshot_module.safe_open
    monkeypatch.setattr(snapshot_module, "safe_open",
                        lambda file, **kw: opened.append(Path(file).name) or original(file, **kw))
    for part, prefix in PREFIXES.items():
        opened.clear()
        load_hf(path, part=part)
        holding = {f for k, f in weight_map.items() if k.startswith(prefix)}
        assert set(opened) == holding, part
    assert len(set(weight_map.values())) > 2


def test_save_part_writes_the_checkpoint_tensors_back(checkpoint, tmp_path) -> None:
    _, path = checkpoint
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    for part in ("thinker", "talker", "code2wav"):
        out = save_hf(load_hf(path, part=part), tmp_path / part, max_shard_size="50KB")
        written = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        assert set(written) == {k for k in weight_map if k.startswith(PREFIXES[part])}, part
        for name, file in written.items():
            with safe_open(out / file, "pt") as mine, safe_open(path / weight_map[name], "pt") as theirs:
                assert torch.equal(mine.get_tensor(name), theirs.get_tensor(name)), name
        reloaded = load_hf(out, part=part)
        assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(),
                                                     load_hf(path, part=part).state_dict().values(), strict=True))


def test_unknown_part_is_named(checkpoint) -> None:
    _, path = checkpoint
    with pytest.raises(ValueError, match="code2wav"):
        load_hf(path, part="token2wav")


def test_text_model_part_matches_with_deepstack_and_left_padding(checkpoint) -> None:
    hf, path = checkpoint
    lm = load_hf(path, part="text_model").eval()
    assert isinstance(lm, DeepstackThinker)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 140, (2, 12), generator=g)
    ids[0, 3:7] = 151  # four image placeholders in row 0, three video ones in row 1
    ids[1, 5:8] = 152
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    image, video = torch.randn(4, 32, generator=g), torch.randn(3, 32, generator=g)
    deep_image = [torch.randn(4, 32, generator=g) for _ in range(2)]
    deep_video = [torch.randn(3, 32, generator=g) for _ in range(2)]
    t = torch.arange(12).expand(2, 12)
    positions = torch.stack([t, t // 2, t % 3])  # distinct t/h/w ids
    text = hf.thinker.model.language_model
    embeds = text.embed_tokens(ids)
    visual = (ids == 151) | (ids == 152)
    embeds[ids == 151], embeds[ids == 152] = image, video
    joint = [torch.zeros(7, 32) for _ in range(2)]
    for level in range(2):
        joint[level][(ids[visual] == 151)] = deep_image[level]
        joint[level][(ids[visual] == 152)] = deep_video[level]
    media = {"image": DeepstackOutput(image[None], torch.tensor([4]), [d[None] for d in deep_image]),
             "video": DeepstackOutput(video[None], torch.tensor([3]), [d[None] for d in deep_video])}
    with torch.no_grad():
        hidden = text(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, visual_pos_masks=visual,
                      deepstack_visual_embeds=joint).last_hidden_state
        ref = hf.thinker.lm_head(hidden)
        logits = lm(ids, media=media, positions=positions, key_padding_mask=mask.bool())
        plain = lm(ids, media={k: v.hidden_states[0] for k, v in media.items()}, positions=positions,
                   key_padding_mask=mask.bool())
    valid = mask.bool()
    assert rel_err(logits[valid], ref[valid]) < 1e-5
    assert rel_err(plain[valid], ref[valid]) > 1e-3  # the deepstack features do matter


def processor_inputs(thinker: Qwen3OmniThinker, rows: list[list[tuple]], seed: int) -> dict[str, torch.Tensor]:
    """What the Qwen3-Omni processor returns, built by hand. Each row is a list of items: ``("text", n)``,
    ``("image", height, width)``, ``("audio", mel_frames)`` or ``("video", frames, side, seconds_per_step,
    mel_frames)`` (``mel_frames > 0``: its soundtrack, interleaved in time). Rows are left padded."""
    g = torch.Generator().manual_seed(seed)
    tokens = lambda mel: int(thinker.audio_encoder.output_lengths(torch.tensor([mel]))[0])
    media: dict[str, list] = {"image": [], "video": [], "seconds": [], "mels": []}

    def visual(kind: str, frames: int, height: int, width: int, seconds: float = 1.0) -> VisualGrid:
        clip = torch.randn(1, frames, 3, height, width, generator=g)
        media[kind].append(patchify_frames(clip, torch.tensor([frames]), (2, 4, 4), 2))
        return VisualGrid.from_patch_grid(media[kind][-1][1][0], 2, seconds)

    def item(kind: str, *args) -> list[int]:
        if kind == "text":
            return torch.randint(0, 140, (args[0],), generator=g).tolist()
        if kind == "image":
            return [V_START, *[IMAGE] * visual("image", 1, *args).num_tokens, V_END]
        if kind == "audio":
            media["mels"].append(args[0])
            return [A_START, *[AUDIO] * tokens(args[0]), A_END]
        frames, side, seconds, mel = args
        grid = visual("video", frames, side, side, seconds)
        media["seconds"].append(seconds)
        if not mel:
            return [V_START, *[VIDEO] * grid.num_tokens, V_END]
        media["mels"].append(mel)
        grid = VisualGrid(grid.t, grid.h, grid.w, seconds, tokens(mel))
        _, kinds = item_positions(grid, "video", thinker.scheme)
        return [V_START, A_START, *[VIDEO if int(k) == 2 else AUDIO for k in kinds], A_END, V_END]

    ids = [torch.tensor([t for spec in row for t in item(*spec)]).flip(0) for row in rows]
    mels = torch.tensor(media["mels"])
    out = {
        "input_ids": pad_sequence(ids, batch_first=True).flip(1),
        "attention_mask": pad_sequence([torch.ones_like(r) for r in ids], batch_first=True).flip(1),
        "input_features": torch.randn(len(mels), 16, int(mels.max()), generator=g),
        "feature_attention_mask": (torch.arange(int(mels.max()))[None] < mels[:, None]).long(),
    }
    for kind, key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        if media[kind]:
            out[key] = torch.cat([p for p, _ in media[kind]])
            out[f"{kind}_grid_thw"] = torch.cat([grid for _, grid in media[kind]])
    if media["seconds"]:
        out["video_second_per_grid"] = torch.tensor(media["seconds"])
    return out


def _compare(hf, thinker, inputs, use_audio_in_video=False) -> None:
    with torch.no_grad():
        ref = hf.thinker(**inputs, use_audio_in_video=use_audio_in_video).logits
        logits = thinker(**hf_inputs(thinker, {**inputs, "use_audio_in_video": use_audio_in_video}))
    valid = inputs["attention_mask"].bool()
    assert rel_err(logits[valid], ref[valid]) < 1e-4


def test_thinker_matches_with_images_video_audio_and_left_padding(checkpoint) -> None:
    hf, path = checkpoint
    thinker = load_hf(path).eval()
    assert isinstance(thinker, Qwen3OmniThinker)
    rows = [[("text", 3), ("image", 16, 24), ("text", 2), ("audio", 237), ("text", 2), ("image", 8, 8), ("text", 2)],
            [("text", 2), ("video", 4, 16, 1.3, 0), ("text", 3)]]
    _compare(hf, thinker, processor_inputs(thinker, rows, 7))


def test_thinker_matches_with_audio_in_video(checkpoint) -> None:
    hf, path = checkpoint
    thinker = load_hf(path, part="thinker").eval()
    rows = [[("text", 2), ("video", 4, 16, 0.7, 300), ("text", 3)]]
    _compare(hf, thinker, processor_inputs(thinker, rows, 8), use_audio_in_video=True)


def test_saved_thinker_loads_in_transformers_with_the_same_logits(checkpoint, tmp_path) -> None:
    _, path = checkpoint
    thinker = load_hf(path).eval()
    out = save_hf(thinker, tmp_path / "thinker", max_shard_size="100KB")
    reloaded = Qwen3OmniMoeForConditionalGeneration.from_pretrained(out).eval()  # talker/code2wav absent: random
    inputs = processor_inputs(thinker, [[("text", 2), ("image", 16, 8), ("audio", 150), ("text", 2)]], 9)
    with torch.no_grad():
        ref = reloaded.thinker(**inputs).logits
        logits = thinker(**hf_inputs(thinker, inputs))
    assert rel_err(logits, ref) < 1e-4


def test_thinker_greedy_generation_equals_transformers(checkpoint) -> None:
    hf, path = checkpoint
    thinker = load_hf(path).eval()
    inputs = processor_inputs(thinker, [[("text", 2), ("image", 8, 16), ("audio", 120), ("text", 3)],
                                        [("text", 4), ("image", 8, 8), ("audio", 100), ("text", 1)]], 10)
    with torch.no_grad():
        ref = hf.thinker.generate(**inputs, max_new_tokens=6, do_sample=False)
        ours = thinker.generate(**hf_inputs(thinker, inputs), max_new_tokens=6)
    assert torch.equal(ours.tokens, ref[:, inputs["input_ids"].shape[1]:])


def test_save_hf_exports_the_tiny_preset_built_by_create_model(tmp_path) -> None:
    """``create_model`` (no checkpoint) -> save_hf writes a Thinker-only Qwen3-Omni config.json; transformers
    loads it with our logits and load_hf gives the model back. An AuT with chunks other than the published
    100 frames has no transformers config (its tower counts 13 tokens per chunk) and is refused."""
    import omnikit
    from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts

    torch.manual_seed(0)
    model = randomise(omnikit.create_model("qwen3_omni_thinker_tiny").eval(), scale=0.3)
    save_hf(model, tmp_path, max_shard_size="100KB")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["enable_audio_output"] is False and config["thinker_config"]["text_config"]["num_experts"] == 4
    again = Qwen3OmniMoeForConditionalGeneration.from_pretrained(tmp_path).eval()
    g = torch.Generator().manual_seed(11)
    batch = collate_prompts([
        OmniPrompt(model, generator=g).text(3).image(16, 24).audio(150).video(4, 16, 16, seconds_per_step=0.5).text(2),
        OmniPrompt(model, generator=g).text(2).image(8, 16).audio(40).text(4),
    ])
    with torch.no_grad():
        ours = model(**batch)
        ref = again.thinker(**batch).logits
        assert torch.equal(load_hf(tmp_path)(**batch), ours)
    valid = batch["attention_mask"].bool()
    assert rel_err(ours[valid], ref[valid]) < 1e-4
    model.audio_encoder = omnikit.create_model("qwen3_omni_aut_tiny", output_dim=32)  # 8-frame chunks
    with pytest.raises(ValueError, match="no architecture exports its config"):
        save_hf(model, tmp_path / "refused")
