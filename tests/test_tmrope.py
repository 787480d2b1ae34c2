"""TMRoPE ids against transformers' Qwen2.5-Omni / Qwen3-Omni ``get_rope_index`` on random layouts."""

from __future__ import annotations

import random

import pytest
import torch

from omnikit.fusion import QWEN2_5_OMNI, QWEN3_OMNI, MediaTokens, VisualGrid, item_positions, tmrope_position_ids
from omnikit.layers import RotaryEmbedding

IMAGE, VIDEO, AUDIO = 151655, 151656, 151646
V_START, V_END, A_START, A_END = 151652, 151653, 151647, 151648
TOKENS = MediaTokens(image=IMAGE, video=VIDEO, audio=AUDIO)


def qwen25_audio_tokens(mel_frames: int) -> int:
    return ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def qwen3_audio_tokens(mel_frames: int, n_window: int = 50) -> int:
    chunk = 2 * n_window
    rest = (mel_frames % chunk - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + (mel_frames // chunk) * 13


def random_sample(rng: random.Random, scheme, use_audio_in_video: bool, audio_tokens_of):
    """One sequence in the reference processor's format, plus the HF-side and omnikit-side item lists."""
    ids, hf = [], {"image": [], "video": [], "audio": [], "spg": []}
    ours = {"images": [], "videos": [], "audios": []}
    text = lambda: [rng.randrange(10, 1000) for _ in range(rng.randrange(1, 6))]
    kinds = ["image", "video", "audio"] + ["video"] * use_audio_in_video
    for _ in range(rng.randrange(1, 5)):
        ids += text()
        kind = rng.choice(kinds)
        if kind == "audio":
            mel = rng.randrange(8, 500)
            n = audio_tokens_of(mel)
            ids += [A_START] + [AUDIO] * n + [A_END]
            hf["audio"].append(mel)
            ours["audios"].append(n)
            continue
        t = rng.randrange(1, 3) if kind == "image" else rng.randrange(1, 9)
        thw = (t, 2 * rng.randrange(1, 4), 2 * rng.randrange(1, 4))
        if kind == "image":
            grid = VisualGrid.from_patch_grid(thw)
            ids += [V_START] + [IMAGE] * grid.num_tokens + [V_END]
            hf["image"].append(thw)
            ours["images"].append(grid)
            continue
        spg = rng.choice([0.5, 1.0, 1.3, 2.0, 2.7, 0.35])
        hf["video"].append(thw)
        hf["spg"].append(spg)
        if not use_audio_in_video:
            grid = VisualGrid.from_patch_grid(thw, seconds_per_step=spg)
            ids += [V_START] + [VIDEO] * grid.num_tokens + [V_END]
        else:
            mel = rng.randrange(8, 900)
            hf["audio"].append(mel)
            grid = VisualGrid.from_patch_grid(thw, seconds_per_step=spg, audio_tokens=audio_tokens_of(mel))
            _, order = item_positions(grid, "video", scheme)
            body = [VIDEO if int(k) == 2 else AUDIO for k in order]
            ids += [V_START, A_START, *body, A_END, V_END]
        ours["videos"].append(grid)
    ids += text()
    return ids, hf, ours


def random_batch(seed: int, scheme, use_audio_in_video: bool, audio_tokens_of):
    rng = random.Random(seed)
    samples = [random_sample(rng, scheme, use_audio_in_video, audio_tokens_of) for _ in range(rng.randrange(1, 4))]
    if not any(s[1]["image"] or s[1]["video"] for s in samples):  # the reference needs a visual grid
        samples.append(random_sample(random.Random(seed + 1000), scheme, use_audio_in_video, audio_tokens_of))
        samples[-1][1]["image"].append((1, 2, 2))
        samples[-1][2]["images"].append(VisualGrid(1, 1, 1))
        samples[-1][0].extend([V_START, IMAGE, V_END])
    length = max(len(s[0]) for s in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    left = rng.random() < 0.5
    for b, (row, _, _) in enumerate(samples):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        ids[b, span] = torch.tensor(row)
        mask[b, span] = 1
    merged_hf = {k: [v for s in samples for v in s[1][k]] for k in ("image", "video", "audio", "spg")}
    merged = {k: [v for s in samples for v in s[2][k]] for k in ("images", "videos", "audios")}
    return ids, mask, merged_hf, merged


def hf_inputs(hf: dict) -> dict:
    return dict(
        image_grid_thw=torch.tensor(hf["image"]).view(-1, 3) if hf["image"] else None,
        video_grid_thw=torch.tensor(hf["video"]).view(-1, 3) if hf["video"] else None,
        audio_seqlens=torch.tensor(hf["audio"]) if hf["audio"] else None,
        second_per_grids=torch.tensor(hf["spg"]) if hf["spg"] else None,
    )


@pytest.fixture(scope="module")
def qwen25_thinker():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as c
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    del transformers
    torch.manual_seed(0)
    config = c.Qwen2_5OmniThinkerConfig(
        vision_start_token_id=V_START, vision_end_token_id=V_END,
        audio_config=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          output_dim=32, num_mel_bins=8),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=152000,
                         rope_scaling=dict(type="default", mrope_section=[2, 3, 3])),
    )
    return m.Qwen2_5OmniThinkerForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def qwen3_rope_index():
    pytest.importorskip("transformers")
    from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as c
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

    base = m.Qwen3OmniMoePreTrainedModelForConditionalGeneration

    class Oracle:  # the reference's position code, without building its towers
        get_rope_index = base.get_rope_index
        get_llm_pos_ids_for_vision = base.get_llm_pos_ids_for_vision
        spatial_merge_size = 2
        config = c.Qwen3OmniMoeThinkerConfig(
            position_id_per_seconds=13, vision_start_token_id=V_START, audio_start_token_id=A_START,
            image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=AUDIO,
        )

    return Oracle().get_rope_index


def _check_equal(ours, ref, mask):
    valid = mask.bool()
    for b in range(mask.shape[0]):
        torch.testing.assert_close(ours[:, b, valid[b]], ref[:, b, valid[b]].to(ours.dtype), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_qwen25_positions_equal_transformers(qwen25_thinker, seed: int, use_audio_in_video: bool) -> None:
    ids, mask, hf, ours = random_batch(seed, QWEN2_5_OMNI, use_audio_in_video, qwen25_audio_tokens)
    ref, deltas = qwen25_thinker.get_rope_index(ids, attention_mask=mask, use_audio_in_video=use_audio_in_video,
                                                **hf_inputs(hf))
    pos, next_pos = tmrope_position_ids(ids, TOKENS, **ours, key_padding_mask=mask.bool())
    assert pos.dtype == torch.long
    _check_equal(pos, ref, mask)
    assert torch.equal(next_pos, deltas[:, 0] + mask.sum(1)), "next_position must continue like the reference"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_audio_in_video", [False, True])
def test_qwen3_positions_equal_transformers(qwen3_rope_index, seed: int, use_audio_in_video: bool) -> None:
    ids, mask, hf, ours = random_batch(seed, QWEN3_OMNI, use_audio_in_video, qwen3_audio_tokens)
    ref, _ = qwen3_rope_index(ids, attention_mask=mask, use_audio_in_video=use_audio_in_video, **hf_inputs(hf))
    pos, _ = tmrope_position_ids(ids, TOKENS, **ours, scheme=QWEN3_OMNI, key_padding_mask=mask.bool())
    assert pos.dtype == torch.float32
    _check_equal(pos, ref, mask)


def test_qwen3_scheme_has_fractional_times_and_time_ordered_interleave() -> None:
    grid = VisualGrid(3, 1, 1, seconds_per_step=0.7, audio_tokens=20)
    pos, kinds = item_positions(grid, "video", QWEN3_OMNI)
    assert pos[0, 0] == 0 and abs(float(pos[0][kinds == 2][1]) - 0.7 * 13) < 1e-5
    assert bool((pos[0][1:] >= pos[0][:-1]).all()), "token-by-token interleave is in time order"
    chunked, _ = item_positions(grid, "video", QWEN2_5_OMNI)
    assert chunked.dtype == torch.long


def test_text_only_positions_are_arange_and_mrope_equals_rope() -> None:
    ids = torch.randint(0, 100, (2, 7))
    pos, next_pos = tmrope_position_ids(ids, TOKENS)
    assert torch.equal(pos, torch.arange(7).expand(3, 2, 7)) and next_pos.tolist() == [7, 7]
    mrope = RotaryEmbedding(16, sections=QWEN2_5_OMNI.sections and (2, 3, 3))
    plain = RotaryEmbedding(16)
    torch.testing.assert_close(mrope(pos)[0], plain(pos[0])[0])


def test_placeholder_count_mismatch_names_the_item() -> None:
    ids = torch.tensor([[1, V_START, *[IMAGE] * 5, V_END, 2]])
    with pytest.raises(ValueError, match=r"image item #0 .* expects 6 placeholder tokens"):
        tmrope_position_ids(ids, TOKENS, images=[VisualGrid(1, 2, 3)])
    with pytest.raises(ValueError, match=r"`images`: 2 image item\(s\) were given but `input_ids` holds .* 1"):
        tmrope_position_ids(ids, TOKENS, images=[VisualGrid(1, 1, 5), VisualGrid(1, 1, 1)])
    with pytest.raises(ValueError, match="more audio items than given"):
        tmrope_position_ids(torch.tensor([AUDIO, AUDIO]), TOKENS)
    with pytest.raises(ValueError, match="not divisible"):
        VisualGrid.from_patch_grid((1, 3, 4))
