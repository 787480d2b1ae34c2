"""Temporal modules beyond the contract: layouts, time positions, fixed token counts, pooling arithmetic."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.video import PerceiverResampler, QFormer, SpaceTimeEncoder, TemporalPooling, TemporalTransformer
from omnikit.video.temporal import DividedSpaceTimeBlock, QFormerConfig, TemporalPoolingConfig
from omnikit.video.temporal.spacetime import SpaceTimeConfig
from omnikit.video.temporal.transformer import TemporalTransformerConfig


def test_divided_block_attends_over_time_then_space() -> None:
    torch.manual_seed(0)
    block = DividedSpaceTimeBlock(16, 2).eval()
    x = torch.randn(1, 3, 5, 16)  # (B, T, N, D)
    mask = torch.ones(1, 3, dtype=torch.bool)
    rope = (torch.ones(1, 3, 8), torch.zeros(1, 3, 8))  # identity rotation
    with torch.no_grad():
        out = block(x, mask, rope)
        ref = x.clone()
        for n in range(5):  # each spatial position over the frames
            seq = x[:, :, n]
            ref[:, :, n] = seq + block.attn_time(block.norm_time(seq))
        for t in range(3):  # each frame over its tokens
            frame = ref[:, t]
            frame = frame + block.attn_space(block.norm_space(frame))
            ref[:, t] = frame + block.mlp(block.norm_mlp(frame))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_divided_and_joint_differ_but_share_shapes() -> None:
    tokens = torch.randn(2, 4, 6, 32)
    outs = []
    for attention in ("divided", "joint"):
        torch.manual_seed(0)
        model = SpaceTimeEncoder(SpaceTimeConfig(dim=32, depth=1, num_heads=2, attention=attention)).eval()
        with torch.no_grad():
            outs.append(model(tokens, torch.tensor([4, 3])))
    assert outs[0].hidden_states.shape == outs[1].hidden_states.shape == (2, 24, 32)
    assert outs[0].lengths.tolist() == [24, 18]
    assert not torch.allclose(outs[0].hidden_states, outs[1].hidden_states)


def test_temporal_positions_come_from_timestamps_and_are_relative() -> None:
    torch.manual_seed(0)
    model = TemporalTransformer(TemporalTransformerConfig(dim=32, depth=2, num_heads=2)).eval()
    tokens = torch.randn(1, 5, 32)
    times = torch.tensor([[0.0, 0.5, 1.0, 4.0, 4.5]])
    with torch.no_grad():
        base = model(tokens, timestamps=times).hidden_states
        shifted = model(tokens, timestamps=times + 10.0).hidden_states
        respaced = model(tokens, timestamps=torch.tensor([[0.0, 0.5, 1.0, 1.5, 2.0]])).hidden_states
    torch.testing.assert_close(base, shifted, atol=1e-4, rtol=1e-4)  # rotary: only time differences matter
    assert (base - respaced).abs().max() > 1e-3  # the 3 s gap is seen
    with pytest.raises(ValueError, match="`timestamps` expected shape"):
        model(tokens, timestamps=times[:, :3])


@pytest.mark.parametrize("cls", ["perceiver", "qformer"])
def test_latent_modules_give_a_fixed_token_count(cls: str) -> None:
    torch.manual_seed(0)
    if cls == "perceiver":
        model = PerceiverResampler(32, num_latents=6, depth=1, num_heads=2, context_dim=20).eval()
    else:
        model = QFormer(QFormerConfig(dim=32, num_queries=6, depth=1, num_heads=2, context_dim=20)).eval()
    for n in (3, 50):
        out = model(torch.randn(2, n, 20), torch.tensor([n, 2]))
        assert out.hidden_states.shape == (2, 6, 32) and out.lengths.tolist() == [6, 6]
    with pytest.raises(ValueError, match=r"`tokens` expected shape \(B, N, 20\)"):
        model(torch.randn(2, 5, 32))


def test_resampler_ignores_padding_tokens() -> None:
    torch.manual_seed(0)
    model = PerceiverResampler(16, num_latents=4, depth=2, num_heads=2).eval()
    tokens = torch.randn(1, 7, 16)
    noisy = tokens.clone()
    noisy[:, 5:] = 1e3
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, torch.tensor([5])).hidden_states,
                                   model(noisy, torch.tensor([5])).hidden_states)
        assert not torch.allclose(model(tokens).hidden_states, model(noisy).hidden_states)


def test_temporal_pooling_means_valid_frames_only() -> None:
    pool = TemporalPooling(TemporalPoolingConfig(dim=2, stride=2))
    tokens = torch.arange(5 * 2, dtype=torch.float).view(1, 5, 1, 2)  # frame t holds [2t, 2t+1]
    tokens = torch.cat([tokens, tokens + 100], dim=0)
    out = pool(tokens, torch.tensor([5, 3]))
    assert out.lengths.tolist() == [3, 2]
    assert out.hidden_states[0].tolist() == [[1, 2], [5, 6], [8, 9]]  # last window holds frame 4 alone
    assert out.hidden_states[1].tolist() == [[101, 102], [104, 105], [0, 0]]  # frame 2 alone, then padding
    peak = TemporalPooling(TemporalPoolingConfig(dim=2, stride=3, mode="max"))(tokens[:1])
    assert peak.hidden_states[0].tolist() == [[4, 5], [8, 9]]


def test_registered_temporal_models_build_by_name() -> None:
    names = omnikit.list_models("*", kind="temporal")
    for expected in ("timesformer_tiny", "vivit_factorized_tiny", "temporal_transformer_tiny",
                     "perceiver_resampler_tiny", "qformer_tiny", "temporal_pool_tiny", "hierarchical_resampler_tiny"):
        assert expected in names
    with pytest.raises(TypeError, match="unknown override"):
        omnikit.create_model("timesformer_tiny", heads=3)
