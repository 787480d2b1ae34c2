"""FrameEncoder: equal to timm's forward_features for several backbones, merger, pooling, loading."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from omnikit.vision import FrameEncoder, PatchMerger, grid_positions, group_patches  # noqa: E402

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
BACKBONES = {
    "vit_tiny_patch16_224": (TINY_VIT, 32),  # 1 CLS token
    "deit_tiny_distilled_patch16_224": (TINY_VIT, 32),  # CLS + distillation token
    "vit_small_patch14_reg4_dinov2": (dict(img_size=28, embed_dim=32, depth=1, num_heads=2), 28),  # 4 registers
    "convnext_atto": ({}, 64),  # NCHW feature map
    "resnet18": ({}, 64),
    "swin_tiny_patch4_window7_224": (dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)), 224),  # NHWC
}


def reference(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """timm's own forward_features of every frame, as (B, T, tokens, D)."""
    out = model.forward_features(frames.flatten(0, 1))
    if out.ndim == 4:
        out = out.flatten(1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else out.flatten(2).transpose(1, 2)
    return out.view(*frames.shape[:2], *out.shape[1:])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_equals_timm_forward_features(name: str) -> None:
    kwargs, side = BACKBONES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    encoder = FrameEncoder(model, flatten=False).eval()
    frames = torch.randn(2, 3, 3, side, side)
    with torch.no_grad():
        out = encoder(frames)
        expected = reference(model, frames)
    assert out.hidden_states.shape == expected.shape
    torch.testing.assert_close(out.hidden_states, expected, atol=1e-5, rtol=1e-5)
    assert out.lengths.tolist() == [3, 3]


def test_by_name_flattened_with_padding_and_chunking() -> None:
    torch.manual_seed(0)
    encoder = FrameEncoder("vit_tiny_patch16_224", frame_batch_size=2, **TINY_VIT).eval()
    assert encoder.num_prefix_tokens == 1 and encoder.tokens_per_frame() == 17
    frames = torch.randn(2, 4, 3, 32, 32)
    lengths = torch.tensor([4, 2])
    with torch.no_grad():
        out = encoder(frames, lengths)
        expected = reference(encoder.backbone, frames)
    assert out.hidden_states.shape == (2, 4 * 17, 32) and out.lengths.tolist() == [68, 34]
    torch.testing.assert_close(out.hidden_states[0], expected[0].flatten(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden_states[1, :34], expected[1, :2].flatten(0, 1), atol=1e-5, rtol=1e-5)
    assert out.hidden_states[1, 34:].abs().max() == 0  # padding frames are zero, never encoded


def test_merger_pooling_and_projection_shapes() -> None:
    torch.manual_seed(0)
    frames = torch.randn(1, 2, 3, 32, 32)
    merged = FrameEncoder("vit_tiny_patch16_224", merge_size=2, out_dim=48, **TINY_VIT)
    out = merged(frames)
    assert out.hidden_states.shape == (1, 2 * 4, 48) and merged.output_dim == 48
    cls = FrameEncoder("vit_tiny_patch16_224", pool="cls", out_dim=24, **TINY_VIT).eval()
    with torch.no_grad():
        tokens = cls.backbone.forward_features(frames[0])[:, 0]
        torch.testing.assert_close(cls(frames).hidden_states[0], cls.proj(tokens))
    mean = FrameEncoder("vit_tiny_patch16_224", pool="mean", **TINY_VIT).eval()
    with torch.no_grad():
        expected = mean.backbone.forward_features(frames[0])[:, 1:].mean(1)
        torch.testing.assert_close(mean(frames).hidden_states[0], expected)


def test_patch_merger_matches_qwen2_vl() -> None:
    hf = pytest.importorskip("transformers.models.qwen2_vl.modeling_qwen2_vl")
    torch.manual_seed(0)
    ours = PatchMerger(16, 24, 2)
    theirs = hf.PatchMerger(dim=24, context_dim=16, spatial_merge_size=2)
    theirs.load_state_dict({k.replace("norm.", "ln_q."): v for k, v in ours.state_dict().items()})
    grid = torch.randn(2, 4, 6, 16)
    order = grid_positions((4, 6), merge_size=2)  # Qwen2-VL lists patches 2x2 block by block
    block_ordered = grid[:, order[0], order[1]].reshape(-1, 16)
    torch.testing.assert_close(ours(grid).reshape(-1, 24), theirs(block_ordered), atol=1e-5, rtol=1e-5)


def test_group_patches_takes_2x2_neighbours() -> None:
    grid = torch.arange(16.0).view(1, 4, 4, 1)
    assert group_patches(grid, 2)[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    with pytest.raises(ValueError, match="divisible by merge_size=2"):
        group_patches(torch.zeros(1, 3, 4, 1), 2)


def test_loads_a_local_timm_checkpoint(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).eval()  # with its head
    file = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(file))
    encoder = FrameEncoder("vit_tiny_patch16_224", checkpoint_path=file, **TINY_VIT).eval()
    frames = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(frames).hidden_states, reference(source, frames).flatten(1, 2))
    with pytest.raises(FileNotFoundError, match="`checkpoint_path`"):
        FrameEncoder("vit_tiny_patch16_224", checkpoint_path=tmp_path / "missing.safetensors")


def test_preprocess_normalises_with_backbone_stats() -> None:
    encoder = FrameEncoder("deit_tiny_distilled_patch16_224", **TINY_VIT)
    frames = torch.full((2, 3, 3, 64, 64), 255, dtype=torch.uint8)
    x = encoder.preprocess(frames)
    assert x.shape == (2, 3, 3, 32, 32)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, 0, :, 0, 0], expected)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`pool`"):
        FrameEncoder("vit_tiny_patch16_224", pool="max", **TINY_VIT)
    with pytest.raises(ValueError, match="`merge_size` needs"):
        FrameEncoder("vit_tiny_patch16_224", merge_size=2, **TINY_VIT)
    with pytest.raises(ValueError, match="`backbone`: timm has no model"):
        FrameEncoder("vit_nonexistent_model")
    with pytest.raises(TypeError, match="`backbone`"):
        FrameEncoder(42)
    encoder = FrameEncoder("vit_tiny_patch16_224", **TINY_VIT)
    with pytest.raises(ValueError, match=r"`frames` expected shape \(B, T, C, H, W\)"):
        encoder(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="`lengths` expected values in"):
        encoder(torch.randn(1, 2, 3, 32, 32), torch.tensor([3]))
    with pytest.raises(ValueError, match="no prefix"):
        FrameEncoder(timm.create_model("resnet18", num_classes=0), pool="cls")
    with pytest.raises(ValueError, match="need a backbone \\*name\\*"):
        FrameEncoder(timm.create_model("resnet18", num_classes=0), pretrained=True)
