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


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_tokens_are_refused_in_eager_mode(moe, value: float) -> None:
    """Before, a NaN token came out NaN and an all-NaN batch reported both auxiliary losses as 0.0."""
    x = torch.randn(2, 6, moe.config.dim)
    x[0, 2, 0] = value
    with pytest.raises(ValueError, match="`x` expected finite values but got 1 NaN/inf"):
        moe(x, return_aux=True)
    with pytest.raises(ValueError, match="`x` expected finite values"):
        moe(torch.full_like(x, value))


def test_aux_losses_leave_out_non_finite_tokens_where_unchecked() -> None:
    """Compiled code skips the eager check; the losses then ignore a non-finite token's router row."""
    from omnikit.moe.losses import load_balancing_loss, router_z_loss

    logits = torch.randn(6, 4)
    bad = logits.clone()
    bad[2] = float("nan")
    counts = torch.tensor([3, 1, 1, 1])
    keep = torch.arange(6) != 2
    torch.testing.assert_close(router_z_loss(bad), router_z_loss(logits[keep]))
    balance = load_balancing_loss(bad.softmax(-1), counts)
    torch.testing.assert_close(balance, 4 * torch.dot(counts / 6.0, logits[keep].softmax(-1).mean(0)))


def test_wrong_width_names_x(moe) -> None:
    with pytest.raises(ValueError, match=r"`x` expected shape \(\.\.\., 32\)"):
        moe(torch.randn(2, 3, moe.config.dim + 1))
    with pytest.raises(TypeError, match="`x` expected a floating-point"):
        moe(torch.ones(2, 3, moe.config.dim, dtype=torch.long))
