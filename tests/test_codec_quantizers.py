"""Quantizers: nearest-code parity, straight-through gradients, k-means init, EMA, dead codes, masks, FSQ, split RVQ."""

from __future__ import annotations

import pytest
import torch

from omnikit.audio import FSQ, ResidualVQ, SplitResidualVQ, VectorQuantizer


def clustered(n: int, centers: torch.Tensor, seed: int = 0, noise: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, centers.shape[0], (n,), generator=g)
    return centers[pick] + noise * torch.randn(n, centers.shape[1], generator=g)


def test_codes_match_vector_quantize_pytorch_nearest_codes() -> None:
    vqp = pytest.importorskip("vector_quantize_pytorch")
    ours = ResidualVQ(16, 3, 32, kmeans_init=False).eval()
    theirs = vqp.ResidualVQ(dim=16, num_quantizers=3, codebook_size=32).eval()
    for k, layer in enumerate(theirs.layers):
        layer._codebook.embed.data[0] = ours.layers[k].codebook
    x = torch.randn(2, 37, 16)
    q, codes, _ = ours(x)
    theirs_q, theirs_codes, _ = theirs(x)
    assert torch.equal(codes, theirs_codes.transpose(1, 2))
    torch.testing.assert_close(q, theirs_q, atol=1e-5, rtol=1e-5)


def test_forward_encode_decode_agree_and_shapes() -> None:
    rvq = ResidualVQ(8, 4, 16, kmeans_init=False).eval()
    x = torch.randn(3, 11, 8)
    out = rvq(x)
    assert out.quantized.shape == x.shape and out.codes.shape == (3, 4, 11) and out.codes.dtype == torch.int64
    assert torch.equal(rvq.encode(x), out.codes)
    torch.testing.assert_close(rvq.decode(out.codes), out.quantized, atol=1e-6, rtol=1e-6)
    assert rvq(x, n_q=2).codes.shape == (3, 2, 11)


def test_straight_through_gradient_is_identity() -> None:
    rvq = ResidualVQ(8, 2, 16, codebook_dim=None).train()
    x = torch.randn(2, 5, 8, requires_grad=True)
    weight = torch.randn(2, 5, 8)
    (rvq(x).quantized * weight).sum().backward()
    torch.testing.assert_close(x.grad, weight)


def test_kmeans_init_finds_the_clusters() -> None:
    centers = torch.randn(4, 8) * 5
    vq = VectorQuantizer(8, 4, kmeans_iters=20, dead_threshold=0).train()
    x = clustered(400, centers)
    _, codes, commit, _ = vq.quantize(x)
    assert bool(vq.initialized)
    assert commit.item() < 1e-3
    assert codes.unique().numel() == 4


def test_ema_training_reduces_the_commitment_loss() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 2, 8, decay=0.8, kmeans_init=False).train()
    centers = torch.randn(8, 8) * 3
    losses = [rvq(clustered(256, centers, seed=s)[None]).commit_loss.item() for s in range(30)]
    assert losses[-1] < 0.2 * losses[0]


def test_dead_codes_are_restarted_from_the_batch() -> None:
    vq = VectorQuantizer(4, 8, kmeans_init=False, dead_threshold=1.0).train()
    vq.codebook[1:] = 1000.0  # unreachable codes: never chosen
    x = torch.randn(64, 4)
    vq.quantize(x)
    far = (vq.codebook.abs() > 100).any(-1)
    assert not bool(far.any()), "dead codes kept their unreachable vectors"
    gap = (vq.codebook[1:, None] - x[None]).abs().amax(-1).min(-1).values
    assert bool((gap == 0).all()), "restarted codes are not batch vectors"


def test_masked_frames_do_not_train_the_codebook_or_enter_losses() -> None:
    torch.manual_seed(0)
    a = ResidualVQ(4, 2, 8, kmeans_init=False, dead_threshold=0).train()
    b = ResidualVQ(4, 2, 8, kmeans_init=False, dead_threshold=0).train()
    b.load_state_dict(a.state_dict())
    valid = torch.randn(1, 6, 4)
    padded = torch.cat([valid, 100 * torch.randn(1, 5, 4)], dim=1)
    mask = torch.arange(11)[None] < 6
    out_a, out_b = a(valid), b(padded, mask)
    torch.testing.assert_close(out_a.loss, out_b.loss)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, msg=key)


def test_learned_codebook_gets_gradient_from_its_loss() -> None:
    rvq = ResidualVQ(4, 2, 8, ema=False, kmeans_init=False).train()
    out = rvq(torch.randn(2, 5, 4))
    assert out.codebook_loss.item() > 0
    out.loss.backward()
    assert all(layer.codebook.grad is not None and layer.codebook.grad.abs().sum() > 0 for layer in rvq.layers)


def test_projected_codebooks_and_bad_inputs() -> None:
    rvq = ResidualVQ(16, 2, 8, codebook_dim=4).eval()
    assert rvq.layers[0].codebook.shape == (8, 4)
    with pytest.raises(ValueError, match="x"):
        rvq(torch.randn(2, 3, 15))
    with pytest.raises(ValueError, match="n_q"):
        rvq(torch.randn(2, 3, 16), n_q=3)
    with pytest.raises(ValueError, match=r"codes.*\[0, 8\)"):
        rvq.decode(torch.full((1, 2, 3), 8))
    with pytest.raises(ValueError, match="mask"):
        rvq(torch.randn(2, 3, 16), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 4, 3)])
def test_fsq_codes_roundtrip_and_cover_every_level(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels, dim=12)
    x = torch.randn(4, 500, 12) * 3
    out = fsq(x)
    assert out.codes.shape == (4, 1, 500) and fsq.codebook_size == torch.tensor(levels).prod().item()
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < fsq.codebook_size
    torch.testing.assert_close(fsq.decode(out.codes), out.quantized, atol=1e-6, rtol=1e-6)
    scaled = fsq._codes_to_scaled(out.codes[:, 0])
    for i, level in enumerate(levels):
        assert scaled[..., i].unique().numel() == level
    x.requires_grad_(True)
    fsq(x).quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="levels"):
        FSQ((8, 1))


def test_split_rvq_semantic_and_acoustic() -> None:
    split = SplitResidualVQ(16, 4, 32, num_semantic=1, codebook_dim=8, kmeans_init=False).eval()
    x = torch.randn(2, 9, 16)
    out = split(x)
    assert out.codes.shape == (2, 4, 9) and out.semantic.shape == x.shape
    assert torch.equal(out.codes[:, :1], split.semantic.encode(x))
    assert torch.equal(out.codes[:, 1:], split.acoustic.encode(x))  # acoustic sees x, not the semantic residual
    torch.testing.assert_close(split.decode(out.codes), out.quantized, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split.decode(out.codes[:, :1]), out.semantic, atol=1e-5, rtol=1e-5)
    assert torch.equal(split.encode(x), out.codes)
    with pytest.raises(ValueError, match="num_quantizers"):
        SplitResidualVQ(16, 1, 32)


@pytest.mark.slow
@pytest.mark.parametrize("ema", [True, False], ids=["ema", "learned"])
def test_compiled_training_step_updates_the_codebooks_like_eager(ema: bool) -> None:
    """Traced (fixed shapes, padded rows weighted 0): the same losses and codebook statistics as eager."""
    torch.manual_seed(0)
    eager = ResidualVQ(4, 2, 8, ema=ema, kmeans_init=False, dead_threshold=0).train()
    traced = ResidualVQ(4, 2, 8, ema=ema, kmeans_init=False, dead_threshold=0).train()
    traced.load_state_dict(eager.state_dict())
    x = torch.randn(2, 11, 4)
    mask = torch.arange(11)[None] < torch.tensor([[11], [6]])
    x[1, 6:] = 100.0  # padding that must not train the codebooks
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    for _ in range(2):
        want, got = eager(x, mask), compiled(x, mask)
        torch.testing.assert_close(got.loss, want.loss)
        assert torch.equal(got.codes, want.codes)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(traced.state_dict()[key], value, msg=key)
    compiled(x, torch.zeros_like(mask))  # no valid frame: nothing changes, as in eager
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(traced.state_dict()[key], value, msg=key)


@pytest.mark.slow
def test_compiled_training_initialises_by_kmeans_and_restarts_dead_codes_from_valid_rows() -> None:
    torch.manual_seed(0)
    centers = torch.randn(4, 8) * 5
    vq = VectorQuantizer(8, 4, kmeans_iters=20, dead_threshold=0).train()
    compiled = torch.compile(vq.quantize, fullgraph=True, backend="aot_eager")
    x = clustered(400, centers)
    _, codes, commit, _ = compiled(x, torch.ones(400, dtype=torch.bool))
    assert bool(vq.initialized) and commit.item() < 1e-3 and codes.unique().numel() == 4
    few = VectorQuantizer(4, 8, ema=False, kmeans_iters=0, dead_threshold=0).train()  # 3 valid rows for 8 codes
    rows = torch.cat([torch.randn(3, 4), torch.full((5, 4), float("nan"))])
    torch.compile(few.quantize, fullgraph=True, backend="aot_eager")(rows, torch.arange(8) < 3)
    assert bool((few.codebook[:, None] == rows[None, :3]).all(-1).any(-1).all()), "a start is not a valid row"
    dead = VectorQuantizer(4, 8, kmeans_init=False, dead_threshold=1.0).train()
    dead.codebook[1:] = 1000.0  # unreachable codes: never chosen
    rows = torch.cat([torch.randn(32, 4), torch.full((32, 4), -500.0)])
    torch.compile(dead.quantize, fullgraph=True, backend="aot_eager")(rows, torch.arange(64) < 32)
    gap = (dead.codebook[1:, None] - rows[None, :32]).abs().amax(-1).min(-1).values
    assert bool((gap == 0).all()), "restarted codes are not valid batch vectors"
