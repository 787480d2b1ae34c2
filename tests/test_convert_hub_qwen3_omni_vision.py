"""Qwen3-Omni vision tower: parity with transformers' ``Qwen3OmniMoeVisionEncoder`` (main and deepstack features)."""

from __future__ import annotations

import pytest
import torch
from qwen3_omni_reference import randomise, rel_err

from omnikit.convert import from_transformers
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision import patchify_frames

transformers = pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (  # noqa: E402
    Qwen3OmniMoeVisionEncoderConfig,
)
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeVisionEncoder  # noqa: E402

PATCH, TPATCH, MERGE = 4, 2, 2


def hf_tower(**overrides) -> Qwen3OmniMoeVisionEncoder:
    cfg = Qwen3OmniMoeVisionEncoderConfig(**{
        "depth": 3, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "patch_size": PATCH,
        "temporal_patch_size": TPATCH, "spatial_merge_size": MERGE, "out_hidden_size": 40,
        "num_position_embeddings": 36, "deepstack_visual_indexes": [0, 1], **overrides,
    })
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    tower = Qwen3OmniMoeVisionEncoder(cfg).eval()
    randomise(tower)
    return tower


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """What transformers' processor does: ``(T, C, H, W)`` -> packed patches in merge-block order, grid."""
    pixels, grid = patchify_frames(frames[None], torch.tensor([frames.shape[0]]), (TPATCH, PATCH, PATCH), MERGE)
    return pixels, grid[0].tolist()


def test_packed_images_and_video_match_transformers() -> None:
    hf = hf_tower()
    ours = from_transformers(hf).eval()
    g = torch.Generator().manual_seed(1)
    items = [torch.randn(2, 3, 16, 24, generator=g), torch.randn(2, 3, 8, 8, generator=g),
             torch.randn(4, 3, 32, 16, generator=g)]  # two images (repeated to 2 frames) and a 4-frame video
    packed = [patchify(x) for x in items]
    pixels = torch.cat([p for p, _ in packed])
    grid = torch.tensor([gr for _, gr in packed])
    with torch.no_grad():
        ref = hf(pixels, grid_thw=grid)
        out = ours.forward_patches(pixels, grid)
    assert rel_err(out.hidden_states, ref.pooler_output) < 1e-5
    assert rel_err(out.last_hidden_state, ref.last_hidden_state) < 1e-5
    assert len(out.deepstack) == 2
    for mine, theirs in zip(out.deepstack, ref.deepstack_features, strict=True):
        assert rel_err(mine, theirs) < 1e-5


def test_frames_api_equals_packed_per_item() -> None:
    ours = from_transformers(hf_tower()).eval()
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(2, 4, 3, 16, 16, generator=g)
    lengths = torch.tensor([4, 3])
    with torch.no_grad():
        out = ours(frames, lengths)
        for b, n in enumerate(lengths.tolist()):
            pixels, grid = patchify(frames[b, :n])  # an odd last frame repeats, as in the processor
            packed = ours.forward_patches(pixels, torch.tensor([grid]))
            k = packed.hidden_states.shape[0]
            assert int(out.lengths[b]) == k
            torch.testing.assert_close(out.hidden_states[b, :k], packed.hidden_states, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.deepstack[1][b, :k], packed.deepstack[1], atol=1e-5, rtol=1e-4)
            assert not out.hidden_states[b, k:].any()


def test_bad_grid_is_named() -> None:
    ours = from_transformers(hf_tower()).eval()
    with pytest.raises(OmnikitValueError, match="grid_thw"):
        ours.forward_patches(torch.randn(10, 3 * TPATCH * PATCH * PATCH), torch.tensor([[1, 2, 4]]))
