"""Position information through the media paths: (t, h, w) embeddings for video, t for audio, resampler times."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion.adapters import AudioAdapter, TubeletEncoder, VideoAdapter
from omnikit.layers.positions import GridPositionEmbedding, TimeEmbedding, grid_sincos, sincos
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.video import PerceiverResampler


def _square_frames(y: int, x: int) -> torch.Tensor:
    """``(1, 2, 3, 16, 16)`` zeros with a 4 x 4 square (one patch) at patch ``(y, x)``."""
    frames = torch.zeros(1, 2, 3, 16, 16)
    frames[..., 4 * y : 4 * y + 4, 4 * x : 4 * x + 4] = 1.0
    return frames


def test_sincos_tables() -> None:
    table = grid_sincos(torch.arange(3) * 2.5, 4, 5, 32)
    assert table.shape == (3, 4, 5, 32)
    assert torch.allclose(table[1, 2, 3, :12], sincos(torch.tensor(2.5), 12))
    flat = table.reshape(-1, 32)
    assert torch.cdist(flat, flat).add(torch.eye(60) * 10).min() > 0.1  # every place has its own code
    with pytest.raises(OmnikitValueError, match="dim"):
        grid_sincos(torch.arange(2), 2, 2, 4)


@pytest.mark.parametrize("kind", ["sincos", "learned"])
def test_tubelet_position_embedding_shifts_with_the_square(kind: str) -> None:
    """Moving the square by one patch moves its (position-free) token; with positions, the embedded
    tokens of the shifted input equal the shifted tokens plus the embedding difference."""
    torch.manual_seed(0)
    encoder = TubeletEncoder(24, patch=4, tubelet=2, pos_embed=kind)
    pos = encoder.pos_embed(torch.zeros(1, 1, 4, 4, 24))
    left, right = encoder.embed(_square_frames(1, 1)), encoder.embed(_square_frames(1, 2))
    assert torch.allclose(right, left.roll(1, dims=3), atol=1e-6)  # content is translation-equivariant
    shifted = encoder.pos_embed(right)
    assert torch.allclose(shifted, encoder.pos_embed(left).roll(1, dims=3) + pos - pos.roll(1, dims=3), atol=1e-5)
    assert not torch.allclose(encoder(_square_frames(1, 2)), encoder(_square_frames(1, 1)).roll(1, dims=3), atol=1e-3)
    plain = TubeletEncoder(24, patch=4, tubelet=2)
    assert torch.allclose(plain(_square_frames(1, 2)), plain(_square_frames(1, 1)).roll(1, dims=3), atol=1e-5)


def test_resampler_sees_where_only_with_positions() -> None:
    """A permutation-invariant resampler cannot tell where the square is unless the tokens carry it."""
    torch.manual_seed(0)
    resampler = PerceiverResampler(32, num_latents=4, depth=1, num_heads=2, context_dim=32)
    outputs = {}
    for positions in (False, True):
        adapter = VideoAdapter(TubeletEncoder(32, patch=4, tubelet=2), 32, fps=4.0, position_embedding=positions)
        a, b = (resampler(adapter(_square_frames(*place)).tokens[None]).hidden_states for place in ((0, 0), (3, 2)))
        outputs[positions] = (a - b).abs().max()
    assert outputs[False] < 1e-5
    assert outputs[True] > 1e-2


def test_video_adapter_time_in_tmrope_units() -> None:
    """Two videos sampled at different rates: the same time step gets the embedding of its time in seconds."""
    encoder = TubeletEncoder(12, patch=4, tubelet=2)
    slow = VideoAdapter(encoder, 12, fps=2.0, project=False, position_embedding=True)
    fast = VideoAdapter(encoder, 12, fps=4.0, project=False, position_embedding=True)
    frames = torch.zeros(1, 4, 3, 4, 4)
    raw = encoder(frames).reshape(-1, 12)
    assert torch.allclose(slow(frames).tokens[1] - raw[1], grid_sincos(torch.tensor([25.0]), 1, 1, 12)[0, 0, 0])
    assert torch.allclose(fast(frames).tokens[1] - raw[1], grid_sincos(torch.tensor([12.5]), 1, 1, 12)[0, 0, 0])


def test_audio_adapter_time_embedding() -> None:
    torch.manual_seed(0)
    encoder = omnikit.create_model("qwen2_5_omni_audio_tiny")
    plain = AudioAdapter(encoder, 24, project=False)
    timed = AudioAdapter(encoder, 24, project=False, time_embedding=True, tokens_per_second=25.0)
    mels, lengths = torch.randn(2, 16, 40), torch.tensor([40, 24])
    a, b = plain(mels, lengths), timed(mels, lengths)
    assert a.items.tolist() == b.items.tolist() == [10, 6]  # token counts as a tensor (no host read)
    expected = torch.cat([timed.times(10, 24), timed.times(6, 24)])
    assert torch.allclose(b.tokens - a.tokens, expected, atol=1e-6)
    assert torch.allclose(expected[3, :8], sincos(torch.tensor(3.0), 8))  # width 24: 8 time channels


@pytest.mark.parametrize("name", ["perceiver_resampler_tiny", "qformer_tiny"])
def test_resampler_time_embedding(name: str) -> None:
    torch.manual_seed(0)
    plain = omnikit.create_model(name).eval()
    assert not any("time_embed" in k for k in plain.state_dict())  # default: the published structure
    model = omnikit.create_model(name, time_steps=3).eval()
    tokens = torch.randn(2, 6, 24)
    times = torch.tensor([0, 0, 1, 1, 2, 2])
    order = torch.tensor([2, 3, 0, 1, 4, 5])  # swap the first two time steps' tokens
    same = model(tokens).hidden_states
    assert torch.allclose(model(tokens[:, order]).hidden_states, same, atol=1e-5)  # order-blind without times
    timed = model(tokens, times=times).hidden_states
    assert not torch.allclose(model(tokens[:, order], times=times).hidden_states, timed, atol=1e-4)
    assert torch.allclose(model(tokens, times=times.expand(2, -1)).hidden_states, timed)
    with pytest.raises(OmnikitValueError, match="time embedding"):
        plain(tokens, times=times)
    with pytest.raises(OmnikitValueError, match=r"\[0, 3\)"):
        model(tokens, times=times + 1)


def test_position_errors() -> None:
    with pytest.raises(OmnikitValueError, match="max_grid"):
        GridPositionEmbedding(8, "learned", max_grid=(2, 2, 2))(torch.zeros(1, 3, 2, 2, 8))
    with pytest.raises(OmnikitValueError, match="kind"):
        GridPositionEmbedding(8, "rotary")
    with pytest.raises(OmnikitValueError, match="times"):
        TimeEmbedding(4, 8)(torch.zeros(1, 3, 8), torch.zeros(4, dtype=torch.long))


def test_tiny_presets_carry_media_positions() -> None:
    """The registered tiny fusion models embed positions by default; ``media_positions=False`` restores
    the position-free adapters."""
    for name in ("omni_early_tiny", "omni_xattn_tiny"):
        model = omnikit.create_model(name)
        assert model.video.position_embedding and model.audio.time_embedding
        plain = omnikit.create_model(name, media_positions=False)
        assert not plain.video.position_embedding and not plain.audio.time_embedding


@pytest.mark.parametrize("name", ["omni_early_tiny", "omni_xattn_tiny"])
def test_tiny_presets_hear_a_short_beep(name: str) -> None:
    """A 60 ms beep in 0.3-std noise changes the preset's audio tokens by about their own variation over time
    (ratio 1.1-1.5 over seeds 0-3; 0.13-0.26 with PyTorch's default conv-stem init, where the encoder's
    sinusoidal positions swamp the stem's output and a model hardly learns to hear the beep: docs/fusion.md)."""
    for seed in range(3):
        torch.manual_seed(seed)
        adapter = omnikit.create_model(name).audio
        assert adapter.encoder.config.stem_init == "he"
        mels = torch.randn(1, 16, 100, generator=torch.Generator().manual_seed(seed)) * 0.3
        beep = mels.clone()
        beep[:, 4:8, 40:46] += 1.5
        with torch.no_grad():
            quiet, loud = adapter(torch.cat([mels, beep]), torch.tensor([100, 100])).tokens.view(2, 25, -1)
        change = (loud - quiet).norm(dim=-1).max() / quiet.std(0).norm()
        assert change > 0.6, (seed, float(change))


def test_audio_stem_init() -> None:
    """``stem_init="he"``: conv-stem weights of std sqrt(2 / fan_in) and zero biases; the default keeps PyTorch's
    (Qwen2.5-Omni's published tower is built as before)."""
    torch.manual_seed(0)
    he = omnikit.create_model("qwen2_5_omni_audio_tiny", stem_init="he").requires_grad_(False)
    default = omnikit.create_model("qwen2_5_omni_audio_tiny").requires_grad_(False)
    assert default.config.stem_init == "torch"
    assert omnikit.create_model("qwen2_5_omni_audio").config.stem_init == "torch"
    for conv in (he.conv1, he.conv2):
        fan_in = conv.weight[0].numel()
        assert abs(float(conv.weight.std()) / (2 / fan_in) ** 0.5 - 1) < 0.1
        assert not conv.bias.any()
    bound = 1 / default.conv2.weight[0].numel() ** 0.5  # PyTorch's kaiming_uniform(a=sqrt(5)) bound
    assert float(default.conv2.weight.abs().max()) <= bound and default.conv2.bias.any()
    with pytest.raises(OmnikitTypeError, match="stem_init"):
        omnikit.create_model("qwen2_5_omni_audio_tiny", stem_init="xavier")


def test_small_preset_is_the_tiny_one_with_four_thinker_layers() -> None:
    torch.manual_seed(0)
    small = omnikit.create_model("omni_early_small", fps=8.0)
    torch.manual_seed(0)
    tiny = omnikit.create_model("omni_early_tiny", fps=8.0, depth=4)
    assert small.thinker.config.depth == 4 and omnikit.create_model("omni_early_tiny").thinker.config.depth == 2
    torch.testing.assert_close(small.state_dict(), tiny.state_dict())
    assert small.audio.encoder.config.stem_init == "he" and small.video.position_embedding
