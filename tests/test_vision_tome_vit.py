"""ToMe inside timm ViT blocks: r=0 is timm, merge counts and sizes, proportional attention, batching, errors."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import omnikit  # noqa: E402
from omnikit.vision import FrameEncoder, tome_forward_features  # noqa: E402
from omnikit.vision.tome_vit import _tome_block  # noqa: E402

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)  # 16 patches
PREFIXES = {"vit_tiny_patch16_224": 1, "deit_tiny_distilled_patch16_224": 2, "vit_small_patch14_reg4_dinov2": 5}


def tiny_vit(name: str = "vit_tiny_patch16_224") -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {**TINY_VIT, "patch_size": 7, "img_size": 28} if "dinov2" in name else TINY_VIT
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()


def test_r0_is_timm_forward_features_with_unit_sizes() -> None:
    vit = tiny_vit()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = tome_forward_features(vit, images, 0)
        assert torch.equal(out.tokens, vit.forward_features(images))
    assert torch.equal(out.sizes, torch.ones(3, 17))


@pytest.mark.parametrize("name", sorted(PREFIXES))
def test_each_block_merges_r_patch_tokens_and_sizes_count_the_patches(name: str) -> None:
    vit, prefix = tiny_vit(name), PREFIXES[name]
    side = 28 if "dinov2" in name else 32
    with torch.no_grad():
        out = tome_forward_features(vit, torch.randn(2, 3, side, side), 3)
    assert out.tokens.shape == (2, prefix + 16 - 2 * 3, 32)
    assert torch.equal(out.sizes[:, :prefix], torch.ones(2, prefix))  # prefix tokens never merge
    assert out.sizes[:, prefix:].sum(1).tolist() == [16.0, 16.0] and bool((out.sizes >= 1).all())
    assert float(out.sizes.max()) > 1


def test_proportional_attention_counts_a_merged_token_as_its_patches() -> None:
    """A token of size 3 attends and is attended to like three copies of itself."""
    block = tiny_vit().blocks[0]
    x = torch.randn(1, 6, 32)
    copies = torch.cat([x, x[:, 4:5].expand(1, 2, 32)], dim=1)  # token 4 three times, sizes all 1
    sizes = torch.ones(1, 6)
    sizes[0, 4] = 3
    with torch.no_grad():
        weighted, _ = _tome_block(block, x, sizes, 0, 1)
        expected, _ = _tome_block(block, copies, None, 0, 1)
        plain, _ = _tome_block(block, x, None, 0, 1)
    torch.testing.assert_close(weighted, expected[:, :6], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain[:, :4], expected[:, :4], atol=1e-3)


def test_batch_equals_images_one_by_one() -> None:
    vit = tiny_vit()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        batch = tome_forward_features(vit, images, 4)
        alone = [tome_forward_features(vit, images[i : i + 1], 4) for i in range(3)]
    torch.testing.assert_close(batch.tokens, torch.cat([a.tokens for a in alone]), atol=1e-5, rtol=1e-5)
    assert torch.equal(batch.sizes, torch.cat([a.sizes for a in alone]))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    vit = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    grads = []
    for recompute in (False, True):
        vit.set_grad_checkpointing(recompute)
        vit.zero_grad()
        tome_forward_features(vit, images, 3).tokens.square().sum().backward()
        grads.append([p.grad.clone() for p in vit.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_frame_encoder_tome_tokens_and_size_weighted_mean_pool() -> None:
    vit = tiny_vit()
    frames = torch.randn(2, 2, 3, 32, 32)
    assert FrameEncoder(vit, tome_r=3).tokens_per_frame() == 11
    pooled = FrameEncoder(vit, tome_r=3, pool="mean", flatten=False).eval()
    with torch.no_grad():
        out = pooled(frames).hidden_states  # (B, T, 1, D)
        ref = tome_forward_features(vit, frames.flatten(0, 1), 3)
    expected = (ref.tokens[:, 1:] * ref.sizes[:, 1:, None]).sum(1) / 16
    torch.testing.assert_close(out.flatten(0, 1)[:, 0], expected, atol=1e-5, rtol=1e-5)
    assert omnikit.create_model("frame_encoder_tome_tiny").tokens_per_frame() == 11


def test_errors_name_the_argument() -> None:
    resnet = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(TypeError, match="`tome_r` needs a timm VisionTransformer-style backbone"):
        FrameEncoder(resnet, tome_r=2)
    with pytest.raises(TypeError, match=r"ResNet lacks \['_pos_embed', 'blocks'"):
        tome_forward_features(resnet, torch.randn(1, 3, 32, 32), 0)
    with pytest.raises(ValueError, match="`tome_r` expected an int >= 0"):
        FrameEncoder(tiny_vit(), tome_r=-1)
    with pytest.raises(ValueError, match="`merge_size` needs every patch"):
        FrameEncoder(tiny_vit(), tome_r=2, merge_size=2, out_dim=8)
    with pytest.raises(ValueError, match="`tome_r`=8 merges 16 tokens over 2 blocks but frames have only 16 patches"):
        FrameEncoder(tiny_vit(), tome_r=8).tokens_per_frame()
    with pytest.raises(ValueError, match="`images` expected"):
        tome_forward_features(tiny_vit(), torch.randn(3, 32, 32), 2)
