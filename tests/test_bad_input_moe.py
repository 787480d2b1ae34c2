"""MoE layers under bad input: empty batches, NaN tokens, wrong widths."""

from __future__ import annotations

import pytest
import torch

import omnikit


@pytest.fixture()
def moe() -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model("moe_tiny").eval()


def test_empty_token_batch_gives_empty_output_and_finite_zero_losses(moe) -> None:
    x = torch.zeros(0, 5, moe.config.dim, requires_grad=True)
    out, aux = moe(x, return_aux=True)
    assert out.shape == x.shape
    assert float(aux.load_balancing_loss.detach()) == 0.0 and float(aux.z_loss.detach()) == 0.0
    (aux.load_balancing_loss + aux.z_loss + out.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_one_bad_token_does_not_poison_aux_losses_or_other_tokens(moe) -> None:
    x = torch.randn(2, 6, moe.config.dim)
    bad = x.clone()
    bad[0, 2, 0] = float("nan")
    out, aux = moe(bad, return_aux=True)
    assert torch.isfinite(aux.load_balancing_loss) and torch.isfinite(aux.z_loss)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, 2] = False
    assert torch.isfinite(out[keep]).all(), "the NaN token reached other tokens"
    clean = moe(x[keep].view(1, -1, moe.config.dim))
    torch.testing.assert_close(out[keep], clean[0])


def test_wrong_width_names_x(moe) -> None:
    with pytest.raises(ValueError, match=r"`x` expected shape \(\.\.\., 32\)"):
        moe(torch.randn(2, 3, moe.config.dim + 1))
    with pytest.raises(TypeError, match="`x` expected a floating-point"):
        moe(torch.ones(2, 3, moe.config.dim, dtype=torch.long))
