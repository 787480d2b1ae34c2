"""Qwen2.5-Omni Thinker and Talker: tiny random transformers models saved in shards, loaded by load_hf, must
give transformers' logits on processor-style inputs (several images, a video, audio, audio-in-video, left
padding), round-trip through save_hf -> from_pretrained, load parts from their own shards only, and decode
greedily token for token like transformers' generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as hf_config  # noqa: E402
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf_modeling  # noqa: E402

from omnikit.convert import hf_inputs, load_hf, save_hf  # noqa: E402
from omnikit.convert import snapshot as snapshot_module  # noqa: E402
from omnikit.fusion import QWEN2_5_OMNI, OmniTalker, OmniThinker, VisualGrid, item_positions  # noqa: E402
from omnikit.vision import patchify_frames  # noqa: E402

VOCAB = 1000
THINKER_ARCH = "Qwen2_5OmniThinkerForConditionalGeneration"
IMAGE, VIDEO, AUDIO, V_START, V_END, A_START, A_END = range(900, 907)
N_MELS, PATCH = 8, (2, 4, 4)

THINKER = dict(
    image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=AUDIO, vision_start_token_id=V_START,
    vision_end_token_id=V_END, audio_start_token_id=A_START, audio_end_token_id=A_END, tie_word_embeddings=False,
    audio_config=dict(d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, output_dim=32,
                      num_mel_bins=N_MELS, n_window=4),
    vision_config=dict(depth=3, hidden_size=16, intermediate_size=24, num_heads=2, out_hidden_size=32,
                       fullatt_block_indexes=[1], patch_size=4, temporal_patch_size=2, window_size=16),
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=False,
                     rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section=[1, 1, 2])),
)
TALKER = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=8, vocab_size=64, embedding_size=32,
              rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section=[1, 1, 2]))
TOKEN2WAV = dict(
    dit_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, head_dim=8, emb_dim=8, enc_emb_dim=8,
                    enc_dim=8, enc_channels=[8, 8, 8, 8, 24], enc_attention_channels=8, enc_se_channels=8,
                    num_embeds=64, mel_dim=8),
    bigvgan_config=dict(mel_dim=8, upsample_initial_channel=16, resblock_kernel_sizes=[3],
                        resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4]),
)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Norm weights around 1 and biases around 0 instead of transformers' constant inits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=g))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def thinker_dir(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    config = hf_config.Qwen2_5OmniThinkerConfig(**THINKER)
    hf = randomise(hf_modeling.Qwen2_5OmniThinkerForConditionalGeneration(config))
    assert hf.lm_head.weight is not hf.get_input_embeddings().weight
    path = tmp_path_factory.mktemp("thinker")
    hf.save_pretrained(path, max_shard_size="40KB")
    assert (path / "model.safetensors.index.json").is_file()
    return hf, path


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    config = hf_config.Qwen2_5OmniConfig(thinker_config=THINKER, talker_config=TALKER, token2wav_config=TOKEN2WAV)
    hf = randomise(hf_modeling.Qwen2_5OmniForConditionalGeneration(config))
    path = tmp_path_factory.mktemp("full")
    hf.save_pretrained(path, max_shard_size="40KB")
    return hf, path


def _audio_tokens(frames: int) -> int:
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


class Prompt:
    """Processor-style inputs built by hand: placeholder runs of the right lengths, packed pixels, mels."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.rows: list[list[int]] = []
        self.pixels: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
        self.grids: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
        self.seconds: list[float] = []
        self.mels: list[int] = []

    def text(self, n: int) -> list[int]:
        return torch.randint(0, 800, (n,), generator=self.g).tolist()

    def _visual(self, kind: str, frames: int, height: int, width: int) -> VisualGrid:
        clip = torch.randn(1, frames, 3, height, width, generator=self.g)
        pixels, grid = patchify_frames(clip, torch.tensor([frames]), PATCH, 2)
        self.pixels[kind].append(pixels)
        self.grids[kind].append(grid)
        return VisualGrid.from_patch_grid(grid[0], 2)

    def image(self, height: int, width: int) -> list[int]:
        grid = self._visual("image", 1, height, width)
        return [V_START, *[IMAGE] * grid.num_tokens, V_END]

    def audio(self, frames: int) -> list[int]:
        self.mels.append(frames)
        return [A_START, *[AUDIO] * _audio_tokens(frames), A_END]

    def video(self, frames: int, side: int, seconds: float, audio_frames: int = 0) -> list[int]:
        grid = self._visual("video", frames, side, side)
        self.seconds.append(seconds)
        if not audio_frames:
            return [V_START, *[VIDEO] * grid.num_tokens, V_END]
        self.mels.append(audio_frames)
        grid = VisualGrid(grid.t, grid.h, grid.w, seconds, _audio_tokens(audio_frames))
        _, kinds = item_positions(grid, "video", QWEN2_5_OMNI)
        return [V_START, A_START, *[VIDEO if int(k) == 2 else AUDIO for k in kinds], A_END, V_END]

    def batch(self, use_audio_in_video: bool = False) -> dict[str, torch.Tensor | bool]:
        """Rows left padded (id 0, mask 0)."""
        length = max(map(len, self.rows))
        ids = torch.zeros(len(self.rows), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, row in enumerate(self.rows):
            ids[b, length - len(row):] = torch.tensor(row)
            mask[b, length - len(row):] = 1
        out: dict[str, torch.Tensor | bool] = {"input_ids": ids, "attention_mask": mask}
        if self.mels:
            longest = max(self.mels)
            out["input_features"] = torch.randn(len(self.mels), N_MELS, longest, generator=self.g)
            out["feature_attention_mask"] = (torch.arange(longest)[None] < torch.tensor(self.mels)[:, None]).long()
        for kind, key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                    ("video", "pixel_values_videos", "video_grid_thw")):
            if self.pixels[kind]:
                out[key] = torch.cat(self.pixels[kind])
                out[grid_key] = torch.cat(self.grids[kind])
        if self.seconds:
            out["video_second_per_grid"] = torch.tensor(self.seconds)
        if use_audio_in_video:
            out["use_audio_in_video"] = True
        return out


def mixed_prompt(seed: int = 3) -> dict[str, torch.Tensor | bool]:
    """Two images, a video and two audio clips over a left-padded batch of two rows."""
    p = Prompt(seed)
    p.rows.append(p.text(3) + p.image(16, 24) + p.text(2) + p.audio(30) + p.text(1) + p.video(4, 16, 2.0) + p.text(2))
    p.rows.append(p.text(2) + p.image(24, 16) + p.audio(17) + p.text(3))
    return p.batch()


def audio_in_video_prompt(seed: int = 4) -> dict[str, torch.Tensor | bool]:
    """Videos with their soundtracks (over two 2 s chunks) next to a standalone audio and an image."""
    p = Prompt(seed)
    p.rows.append(p.text(2) + p.video(4, 16, 2.0, audio_frames=220) + p.text(2) + p.audio(21) + p.text(1))
    p.rows.append(p.text(1) + p.image(8, 8) + p.video(2, 8, 1.0, audio_frames=40) + p.text(2))
    return p.batch(use_audio_in_video=True)


def max_rel_error(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    valid = mask.bool()
    return float((ours[valid] - ref[valid]).abs().max() / ref[valid].abs().max())


def reference_logits(hf: torch.nn.Module, batch: dict) -> torch.Tensor:
    """transformers' logits; grids given as host ints (the contract's form) go in as the processor's tensors."""
    batch = {k: torch.tensor(v) if k.endswith("_grid_thw") and not isinstance(v, torch.Tensor) else v
             for k, v in batch.items()}
    with torch.no_grad():
        return hf(**batch).logits


@pytest.mark.parametrize("make", [mixed_prompt, audio_in_video_prompt])
def test_thinker_checkpoint_gives_transformers_logits(thinker_dir, make) -> None:
    hf, path = thinker_dir
    model = load_hf(path)
    assert isinstance(model, OmniThinker)
    batch = make()
    ref = reference_logits(hf, batch)
    with torch.no_grad():
        ours = model(**hf_inputs(model, batch))
    assert max_rel_error(ours, ref, batch["attention_mask"]) <= 1e-4


def test_full_checkpoint_thinker_part_and_talker(full_dir) -> None:
    hf, path = full_dir
    thinker = load_hf(path)  # the default part of the full checkpoint
    batch = mixed_prompt(5)
    ref = reference_logits(hf.thinker, batch)
    with torch.no_grad():
        assert max_rel_error(thinker(**hf_inputs(thinker, batch)), ref, batch["attention_mask"]) <= 1e-4
    talker = load_hf(path, part="talker")
    assert isinstance(talker, OmniTalker)
    g = torch.Generator().manual_seed(6)
    embeds = torch.randn(2, 7, TALKER["embedding_size"], generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    positions = torch.randint(0, 20, (3, 2, 7), generator=g).sort(-1).values
    with torch.no_grad():
        ref = hf.talker(inputs_embeds=embeds.clone(), position_ids=positions, attention_mask=mask).logits
        ours = talker(embeds, positions=positions, key_padding_mask=mask.bool())
    assert max_rel_error(ours, ref, mask) <= 1e-4
    codes = torch.randint(0, TALKER["vocab_size"], (2, 7), generator=g)  # decoding: code embeddings + reply state
    with torch.no_grad():
        ref = hf.talker(input_ids=codes, thinker_reply_part=embeds, position_ids=positions).logits
        ours = talker(embeds[:, :1].expand(-1, 7, -1), codes, positions=positions)
    assert max_rel_error(ours, ref, torch.ones_like(mask)) <= 1e-4


def test_parts_open_only_their_shards(full_dir, monkeypatch) -> None:
    hf, path = full_dir
    opened: list[str] = []
    real_open = snapshot_module.safe_open
    monkeypatch.setattr(snapshot_module, "safe_open", lambda p, **kw: opened.append(Path(p).name) or real_open(p, **kw))
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    expected = {
        "audio_encoder": "thinker.audio_tower.", "vision_encoder": "thinker.visual.", "talker": "talker.",
    }
    for part, prefix in expected.items():
        opened.clear()
        module = load_hf(path, part=part)
        assert set(opened) == {f for k, f in weight_map.items() if k.startswith(prefix)}, part
        assert len(set(opened)) < len(set(weight_map.values()))
        del module
    opened.clear()
    text = load_hf(path, part="text_model")
    text_prefixes = ("thinker.model.", "thinker.lm_head.")
    assert set(opened) == {f for k, f in weight_map.items() if k.startswith(text_prefixes)}
    ids = torch.randint(0, 800, (2, 6))
    with torch.no_grad():
        ref = hf.thinker(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert max_rel_error(text(ids), ref, torch.ones_like(ids)) <= 1e-4


def test_audio_encoder_part_matches_the_tower(full_dir) -> None:
    hf, path = full_dir
    audio = load_hf(path, part="audio_encoder")
    batch = mixed_prompt(7)
    with torch.no_grad():
        ref = hf.thinker.get_audio_features(batch["input_features"], batch["feature_attention_mask"]).last_hidden_state
        out = audio(**hf_inputs(audio, batch))
    assert max_rel_error(torch.cat(out.unpad()), ref, torch.ones(len(ref), dtype=torch.bool)) <= 1e-4


def test_save_hf_round_trip_to_from_pretrained(thinker_dir, tmp_path) -> None:
    hf, path = thinker_dir
    model = load_hf(path)
    save_hf(model, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    again = hf_modeling.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    batch = audio_in_video_prompt(8)
    assert max_rel_error(reference_logits(again, batch), reference_logits(hf, batch), batch["attention_mask"]) <= 1e-4


def test_save_hf_exports_a_thinker_built_without_a_checkpoint(thinker_dir, tmp_path) -> None:
    from omnikit.convert.hub_qwen2_5_omni import build_thinker

    hf, _ = thinker_dir
    model = build_thinker(hf.config.to_dict())
    model.load_state_dict(load_hf(thinker_dir[1]).state_dict())
    save_hf(model.eval(), tmp_path)
    again = hf_modeling.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    batch = mixed_prompt(10)
    assert max_rel_error(reference_logits(again, batch), reference_logits(hf, batch), batch["attention_mask"]) <= 1e-4


def test_greedy_generation_with_image_and_audio_matches_transformers(thinker_dir) -> None:
    hf, path = thinker_dir
    model = load_hf(path)
    p = Prompt(9)
    p.rows.append(p.text(2) + p.image(16, 16) + p.text(1) + p.audio(25) + p.text(3))
    p.rows.append(p.text(4) + p.image(8, 16) + p.audio(12) + p.text(1))
    batch = p.batch()
    new = 8
    ref = hf.generate(**batch, max_new_tokens=new, do_sample=False, pad_token_id=0)[:, batch["input_ids"].shape[1]:]
    out = model.generate(**hf_inputs(model, batch), max_new_tokens=new)
    assert torch.equal(out.tokens, ref)


def test_inputs_that_disagree_with_the_placeholders_are_named(thinker_dir) -> None:
    model = load_hf(thinker_dir[1])
    batch = mixed_prompt(11)
    with pytest.raises(ValueError, match="`pixel_values` given without `image_grid_thw`"):
        model(**{**hf_inputs(model, batch), "image_grid_thw": None})
    fewer = {**batch, "input_ids": batch["input_ids"].masked_fill(batch["input_ids"] == IMAGE, 5)}
    with pytest.raises(ValueError, match=r"2 image item\(s\) were given but `input_ids` holds placeholders for 0"):
        model(**hf_inputs(model, fewer))
    with pytest.raises(ValueError, match="use_audio_in_video: 1 videos but 0 audio tracks inside video items"):
        model(**hf_inputs(model, {**batch, "use_audio_in_video": True}))


def test_unsupported_vision_activation_is_named(tmp_path) -> None:
    from omnikit.convert.hub_qwen2_5_omni import vision_config

    with pytest.raises(ValueError, match=r"vision_config.hidden_act='gelu' is not supported"):
        vision_config({**THINKER["vision_config"], "hidden_act": "gelu", "out_hidden_size": 32})


# Qwen2.5-Omni-7B config.json values (thinker_config / talker_config); transformers' defaults differ.
PUBLISHED_THINKER = dict(
    audio_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                      num_mel_bins=128, output_dim=3584, n_window=100),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
    text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                     rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24])),
    tie_word_embeddings=False,
)
PUBLISHED_TALKER = dict(embedding_size=3584, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=12, num_key_value_heads=4, head_dim=128, vocab_size=8448,
                        rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24]))


def _meta_count(cls, config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in cls(config).parameters())


def test_thinker_preset_is_the_published_architecture() -> None:
    from omnikit import count_parameters, create_model

    config = hf_config.Qwen2_5OmniThinkerConfig(**PUBLISHED_THINKER)
    reference = _meta_count(hf_modeling.Qwen2_5OmniThinkerForConditionalGeneration, config)
    ours = create_model("qwen2_5_omni_7b_thinker", device="meta")
    audio = config.audio_config
    # the two inert audio-tower differences, both documented: omnikit's fused q/k/v carries a zero key bias
    # the reference lacks, and the reference keeps a bos/eos embedding its forward never reads
    inert = audio.encoder_layers * audio.d_model - 2 * audio.output_dim
    assert count_parameters(ours) == reference + inert
    assert count_parameters(ours.vision_encoder) == _meta_count(hf_modeling.Qwen2_5OmniVisionEncoder,
                                                                config.vision_config)
    text = sum(p.numel() for p in ours.text_model.parameters())
    with torch.device("meta"):
        hf_text = hf_modeling.Qwen2_5OmniThinkerTextModel(config.text_config)
    assert text == sum(p.numel() for p in hf_text.parameters()) + 152064 * 3584  # + lm_head


def test_talker_preset_is_the_published_architecture() -> None:
    from omnikit import count_parameters, create_model

    reference = _meta_count(hf_modeling.Qwen2_5OmniTalkerForConditionalGeneration,
                            hf_config.Qwen2_5OmniTalkerConfig(**PUBLISHED_TALKER))
    assert count_parameters(create_model("qwen2_5_omni_7b_talker", device="meta")) == reference


def test_save_hf_exports_the_tiny_preset_built_by_create_model(tmp_path) -> None:
    """``create_model`` (no checkpoint) -> save_hf writes a Thinker config.json; transformers loads it with our
    logits on images, a video, audio and a left-padded batch, and load_hf gives the model back."""
    from omnikit import create_model

    torch.manual_seed(0)
    model = randomise(create_model("qwen2_5_omni_thinker_tiny"))
    save_hf(model, tmp_path, max_shard_size="60KB")
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [THINKER_ARCH]
    again = hf_modeling.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    batch = model.contract_inputs([5, 6], seed=12).kwargs  # three images, a video, two audio clips, left padded
    with torch.no_grad():
        ours = model(**batch)
        back = load_hf(tmp_path)(**batch)  # the audio key bias (inert in softmax) is not in the layout: zeros
    assert max_rel_error(back, ours, batch["attention_mask"]) <= 1e-6
    assert max_rel_error(ours, reference_logits(again, batch), batch["attention_mask"]) <= 1e-4
