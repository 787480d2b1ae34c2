"""The Qwen2.5-Omni vision tower (WindowViT) against transformers' ``Qwen2_5OmniVisionEncoder``."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.convert import from_transformers
from omnikit.vision import WindowViT, patchify_frames, window_order

TINY = dict(depth=3, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48, fullatt_block_indexes=[1],
            patch_size=4, temporal_patch_size=2, window_size=16, spatial_merge_size=2, in_channels=3)


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norms and biases included (not transformers' constant inits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))


@pytest.fixture(scope="module")
def pair():
    pytest.importorskip("transformers")
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as c
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    hf = m.Qwen2_5OmniVisionEncoder(c.Qwen2_5OmniVisionEncoderConfig(**TINY)).eval()
    randomize(hf)
    ours = from_transformers(hf)  # through the load_hf key map
    assert isinstance(ours, WindowViT) and ours.config == omnikit.create_model("qwen2_5_omni_vision_tiny").config
    return hf, ours


def packed(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [patchify_frames(f[None], torch.tensor([f.shape[0]]), (2, 4, 4), 2) for f in clips]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def test_images_and_video_match_transformers(pair) -> None:
    hf, ours = pair
    g = torch.Generator().manual_seed(1)
    # images whose grids leave partial windows (6x10, 10x4 patches), and a 5-frame video (odd: last frame repeated)
    clips = [torch.randn(1, 3, 24, 40, generator=g), torch.randn(1, 3, 40, 16, generator=g),
             torch.randn(5, 3, 32, 32, generator=g), torch.randn(2, 3, 8, 8, generator=g)]
    pixel_values, grid_thw = packed(clips)
    with torch.no_grad():
        ref = hf(pixel_values, grid_thw=grid_thw).pooler_output
        out = ours.forward_patches(pixel_values, grid_thw)
    assert out.shape == ref.shape == (int(grid_thw.prod(-1).sum()) // 4, 48)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-4


def test_window_order_equals_transformers_index() -> None:
    pytest.importorskip("transformers")
    from transformers.vision_utils import get_vision_window_index

    grid_thw = torch.tensor([[1, 6, 10], [3, 8, 8], [2, 16, 4], [1, 2, 2]])
    for window_px, patch in ((16, 4), (112, 14), (56, 14)):
        ref_index, ref_cu = get_vision_window_index(grid_thw, 2, window_px, patch)
        order, sizes, _ = window_order(grid_thw, 2, window_px // (2 * patch))
        assert torch.equal(order, ref_index)
        assert torch.equal(torch.cat((torch.zeros(1, dtype=torch.long), (sizes * 4).cumsum(0))), ref_cu.long())


def test_frames_api_equals_packed_items_and_ignores_padding(pair) -> None:
    _, ours = pair
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(2, 5, 3, 16, 24, generator=g)
    lengths = torch.tensor([5, 2])
    frames[1, 2:] = 1e3  # padding frames must not leak into item 1
    with torch.no_grad():
        out = ours(frames, lengths)
        alone = [ours.forward_patches(*packed([frames[b, : int(n)]])) for b, n in enumerate(lengths)]
    assert out.lengths.tolist() == [3 * 2 * 3, 1 * 2 * 3]
    for b, ref in enumerate(alone):
        torch.testing.assert_close(out.hidden_states[b, : len(ref)], ref, rtol=1e-5, atol=1e-5)
    assert not out.hidden_states[1, len(alone[1]):].any()


@pytest.mark.slow
def test_compiled_frames_path_cuts_windows_by_shape_and_equals_eager(pair) -> None:
    """Traced, every temporal step runs as one image with its windows cut by reshapes (full windows,
    both edge strips and the corner here): equal to the eager packed path, padded steps zeroed."""
    _, ours = pair
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(3, 5, 3, 24, 40, generator=g)  # 3 x 5 merge groups: windows of 2 leave edges
    lengths = torch.tensor([5, 2, 3])
    torch._dynamo.reset()
    with torch.no_grad():
        want = ours(frames, lengths)
        got = torch.compile(ours, fullgraph=True, backend="eager")(frames, lengths)
    assert torch.equal(got.lengths, want.lengths)
    torch.testing.assert_close(got.hidden_states, want.hidden_states, rtol=1e-5, atol=1e-5)


def test_bad_grids_are_named() -> None:
    model = omnikit.create_model("qwen2_5_omni_vision_tiny")
    pixels = torch.randn(16, model.patch_dim)
    with pytest.raises(ValueError, match=r"`pixel_values` expected 24 rows"):
        model.forward_patches(pixels, torch.tensor([[1, 4, 6]]))
    with pytest.raises(ValueError, match="multiples of merge_size=2"):
        model.forward_patches(pixels, torch.tensor([[1, 4, 3]]))
    with pytest.raises(ValueError, match="multiples of 8x8 px"):
        model(torch.randn(1, 2, 3, 12, 16))


def test_published_vision_tower_count_equals_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.models.qwen2_5_omni import configuration_qwen2_5_omni as c
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as m

    config = c.Qwen2_5OmniVisionEncoderConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                               out_hidden_size=3584, window_size=112,
                                               fullatt_block_indexes=[7, 15, 23, 31])
    with torch.device("meta"):
        reference = sum(p.numel() for p in m.Qwen2_5OmniVisionEncoder(config).parameters())
    ours: WindowViT = omnikit.create_model("qwen2_5_omni_vision", device="meta")
    assert omnikit.count_parameters(ours) == reference
