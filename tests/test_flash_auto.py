"""``backend="auto"`` runs flash-attn when it is installed and the inputs allow it: these tests fail if
flash did not run (they count the kernel's calls); skipped without CUDA or flash-attn."""

from __future__ import annotations

import pytest
import torch

from omnikit.layers import attention_backends
from omnikit.layers.attention_backends import flash_attn_available, scaled_dot_product

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not flash_attn_available(torch.device("cuda")), reason="needs CUDA and flash_attn"),
]


@pytest.fixture
def flash_calls(monkeypatch) -> dict[str, int]:
    module = attention_backends._flash_attn_module()
    calls = {"flash_attn_func": 0, "flash_attn_varlen_func": 0}
    for name in calls:
        original = getattr(module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def _qkv(batch: int = 2, length: int = 64):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, 8, length, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    kv = [torch.randn(batch, 2, length, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2)]
    return q, *kv


def test_flash_runs_under_auto_and_matches_sdpa(flash_calls) -> None:
    q, k, v = _qkv()
    out = scaled_dot_product(q, k, v, backend="auto", causal=True)
    assert flash_calls["flash_attn_func"] == 1
    reference = scaled_dot_product(q, k, v, backend="sdpa", causal=True)
    torch.testing.assert_close(out.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_flash_varlen_runs_under_auto_for_packed_sequences(flash_calls) -> None:
    q, k, v = _qkv(batch=1)
    cu = torch.tensor([0, 20, 64], device="cuda")
    out = scaled_dot_product(q, k, v, backend="auto", causal=True, cu_seqlens=cu)
    assert flash_calls["flash_attn_varlen_func"] == 1
    reference = scaled_dot_product(q, k, v, backend="eager", causal=True, cu_seqlens=cu)
    torch.testing.assert_close(out.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_auto_falls_back_to_sdpa_when_flash_cannot_serve(flash_calls) -> None:
    q, k, v = _qkv()
    scaled_dot_product(q.float(), k.float(), v.float(), backend="auto", causal=True)  # fp32: not flash
    padding = torch.ones(2, 64, dtype=torch.bool, device="cuda")
    scaled_dot_product(q, k, v, backend="auto", causal=True, key_padding_mask=padding)  # a mask: not flash
    assert flash_calls == {"flash_attn_func": 0, "flash_attn_varlen_func": 0}
