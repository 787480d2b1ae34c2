"""MoE experts' float32 CPU products on oneDNN (one matmul per expert) against the bmm / grouped-GEMM path."""

from __future__ import annotations

import pytest
import torch

from omnikit.moe import MoE, MoEConfig
from omnikit.moe import grouped as grouped_module
from omnikit.moe.grouped import RowLayout


def _run(moe: MoE, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    moe.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    out = moe(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, *(p.grad for p in moe.parameters())


@pytest.mark.parametrize("gemm", ["ragged", "padded", "paired"])
def test_onednn_experts_match_the_batched_path(gemm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    moe = MoE(MoEConfig(dim=32, num_experts=4, top_k=2, expert_hidden=24, expert_gemm=gemm))
    x = torch.randn(2, 40, 32)
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_ROWS", 10**9)
    before = _run(moe, x)
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_ROWS", 1)
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_MACS", 0)
    calls = []
    real = grouped_module.onednn_linear
    monkeypatch.setattr(grouped_module, "onednn_linear", lambda *a: calls.append(1) or real(*a))
    after = _run(moe, x)
    assert calls, "the oneDNN path did not run"
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_onednn_outer_zeroes_experts_without_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_ROWS", 1)
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_MACS", 0)
    left, right = torch.randn(6, 3), torch.randn(6, 5)
    layout = RowLayout(3, offsets=torch.tensor([2, 2, 6], dtype=torch.int32))
    out = layout.outer(left, right, out=torch.full((3, 3, 5), float("nan")))
    torch.testing.assert_close(out[0], left[:2].t() @ right[:2])
    assert torch.equal(out[1], torch.zeros(3, 5))
    torch.testing.assert_close(out[2], left[2:].t() @ right[2:])
    assert layout.mm(left, torch.randn(3, 3, 4)).shape == (6, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_dtypes_keep_the_batched_path(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_ROWS", 1)
    monkeypatch.setattr(grouped_module, "ONEDNN_MIN_MACS", 0)
    layout = RowLayout(2, capacity=4)
    rows, weight = torch.randn(8, 3, dtype=dtype), torch.randn(2, 3, 5, dtype=dtype)
    assert not layout._onednn(rows, weight)
    torch.testing.assert_close(layout.mm(rows, weight), torch.bmm(rows.view(2, 4, 3), weight).view(8, 5))
