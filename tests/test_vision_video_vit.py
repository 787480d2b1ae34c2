"""Tubelet embedding, 2-D / 3-D grid rotary and the native video ViT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omnikit.layers import apply_rotary
from omnikit.vision import AxialRotaryEmbedding, TubeletEmbed, VideoViT, VideoViTConfig, grid_positions


def test_tubelet_equals_conv3d() -> None:
    torch.manual_seed(0)
    embed = TubeletEmbed(24, (2, 4, 4), bias=True)
    frames = torch.randn(2, 6, 3, 8, 12)
    ours = embed(frames)
    conv = F.conv3d(frames.transpose(1, 2), embed.proj.weight, embed.proj.bias, stride=(2, 4, 4))
    torch.testing.assert_close(ours, conv.permute(0, 2, 3, 4, 1), atol=1e-5, rtol=1e-5)
    assert ours.shape == (2, 3, 2, 3, 24)


def test_tubelet_repeats_last_valid_frame() -> None:
    torch.manual_seed(0)
    embed = TubeletEmbed(8, (2, 2, 2))
    frames = torch.randn(2, 5, 3, 4, 4)
    out = embed(frames, torch.tensor([5, 3]))
    assert out.shape[1] == 3
    repeated = torch.cat([frames[1:2, :3], frames[1:2, 2:3]], dim=1)  # frames 0,1,2,2
    torch.testing.assert_close(out[1, :2], embed(repeated)[0])
    with pytest.raises(ValueError, match="`frames` sides expected positive multiples of 2x2"):
        embed(torch.randn(1, 2, 3, 5, 4))


def test_2d_rotary_matches_qwen2_vl_vision_rotary() -> None:
    hf = pytest.importorskip("transformers.models.qwen2_vl.modeling_qwen2_vl")
    head_dim, h, w = 16, 4, 6
    positions = grid_positions((h, w), merge_size=2)
    cos, sin = AxialRotaryEmbedding(head_dim, axes=2)(positions)
    config = hf.Qwen2VLVisionConfig(embed_dim=2 * head_dim, num_heads=2)
    ref_cos, ref_sin = hf.Qwen2VLVisionRotaryEmbedding(config)(torch.zeros(1), positions.T)  # ids as (N, [h, w])
    torch.testing.assert_close(cos[0], ref_cos)
    torch.testing.assert_close(sin[0], ref_sin)


def test_3d_rotary_is_relative_per_axis() -> None:
    rotary = AxialRotaryEmbedding(24, axes=3)
    q, k = torch.randn(1, 1, 1, 24), torch.randn(1, 1, 1, 24)

    def score(pq, pk):
        cq, sq = rotary(torch.tensor(pq).view(3, 1))
        ck, sk = rotary(torch.tensor(pk).view(3, 1))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    torch.testing.assert_close(score([3, 1, 2], [1, 0, 0]), score([5, 4, 7], [3, 3, 5]))  # same offsets
    assert not torch.allclose(score([3, 1, 2], [1, 0, 0]), score([3, 1, 2], [1, 0, 1]))
    with pytest.raises(ValueError, match="`sections`"):
        AxialRotaryEmbedding(24, axes=3, sections=(4, 4, 3))


def test_grid_positions_block_order() -> None:
    pos = grid_positions((1, 2, 4), merge_size=2)
    assert pos[1].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert pos[2].tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


def test_video_vit_padding_and_token_count() -> None:
    torch.manual_seed(0)
    model = VideoViT(VideoViTConfig(dim=32, depth=1, num_heads=2, patch=(2, 4, 4), out_dim=40)).eval()
    frames = torch.randn(2, 5, 3, 16, 24)
    with torch.no_grad():
        out = model(frames, torch.tensor([5, 2]))
        alone = model(frames[1:2, :2])
    per_group = (16 // 8) * (24 // 8)
    assert out.lengths.tolist() == [3 * per_group, per_group] and out.hidden_states.shape == (2, 3 * per_group, 40)
    assert model.num_output_tokens(torch.tensor([5, 2]), 16, 24).tolist() == out.lengths.tolist()
    torch.testing.assert_close(out.hidden_states[1, :per_group], alone.hidden_states[0], atol=1e-5, rtol=1e-4)
    assert out.hidden_states[1, per_group:].abs().max() == 0
