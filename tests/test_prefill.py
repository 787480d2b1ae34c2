"""Chunked prefill equals one pass: dense and MoE language models, the hybrid linear-attention stack."""

from __future__ import annotations

import pytest
import torch

from omnikit.layers import DecoderConfig
from omnikit.models import CausalLM, chunk_spans, prefill
from omnikit.moe import MoE, MoEConfig
from omnikit.registry import create_model

TOL = {"atol": 1e-5, "rtol": 1e-4}


def _lm(moe: bool = False) -> CausalLM:
    torch.manual_seed(0)
    config = DecoderConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, vocab_size=64)
    factory = (lambda i: MoE(MoEConfig(dim=32, num_experts=4, top_k=2, expert_hidden=16))) if moe else None
    return CausalLM(config, mlp_factory=factory).eval()


def test_chunk_spans_cover_the_prompt() -> None:
    assert chunk_spans(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert chunk_spans(2, 5) == [slice(0, 2)]
    with pytest.raises(ValueError, match="chunk"):
        chunk_spans(4, 0)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
@pytest.mark.parametrize("chunk", [1, 4, 13])
def test_chunked_prefill_equals_one_pass(moe: bool, chunk: int) -> None:
    """Last logits and the next decode step match a full forward (left padding, explicit positions)."""
    lm = _lm(moe)
    ids = torch.randint(0, 64, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, :3] = False
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = lm(ids, positions=positions, key_padding_mask=mask)
        with lm.streaming(2):
            last = prefill(lm, ids, chunk=chunk, positions=positions, key_padding_mask=mask)
            torch.testing.assert_close(last, full[:, -1], **TOL)
            nxt = torch.randint(0, 64, (2, 1))
            mask2 = torch.cat((mask, torch.ones(2, 1, dtype=torch.bool)), 1)
            pos2 = positions[:, -1:] + 1
            step = lm(nxt, positions=pos2, key_padding_mask=mask2)
        ref = lm(torch.cat((ids, nxt), 1), positions=torch.cat((positions, pos2), 1), key_padding_mask=mask2)
    torch.testing.assert_close(step[:, -1], ref[:, -1], **TOL)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_with_prefill_chunk_equals_one_pass(cache: str) -> None:
    lm = _lm()
    ids = torch.randint(0, 64, (2, 11))
    ref = lm.generate(ids, max_new_tokens=4, cache=cache)
    out = lm.generate(ids, max_new_tokens=4, cache=cache, prefill_chunk=3)
    assert torch.equal(out.tokens, ref.tokens)
    torch.testing.assert_close(out.hidden, ref.hidden, **TOL)


def test_thinker_text_prompt_prefills_in_chunks() -> None:
    torch.manual_seed(0)
    thinker = create_model("thinker_tiny").eval()
    ids = thinker.contract_inputs([10, 10]).kwargs["input_ids"]
    ref = thinker.generate(ids, max_new_tokens=3)
    out = thinker.generate(ids, max_new_tokens=3, prefill_chunk=4)
    assert torch.equal(out.tokens, ref.tokens)


@pytest.mark.parametrize("chunk", [3, 8])
def test_hybrid_prefill_carries_linear_attention_state(chunk: int) -> None:
    """Gated DeltaNet state and conv cache cross chunk edges (chunk 3 is not a multiple of the
    kernel's chunk_size 4); the step after the prefill equals a full forward."""
    torch.manual_seed(0)
    model = create_model("hybrid_moe_tiny").eval()
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        full = model(x)
        with model.streaming(2):
            last = prefill(model, x[:, :16], chunk=chunk)
            step = model(x[:, 16:])
    torch.testing.assert_close(last, full[:, 15], **TOL)
    torch.testing.assert_close(step, full[:, 16:], **TOL)


def test_prefill_bad_input_names_the_argument() -> None:
    lm = _lm()
    ids = torch.randint(0, 64, (1, 5))
    with pytest.raises(ValueError, match="open stream"):
        prefill(lm, ids, chunk=2)
    with lm.streaming(1), pytest.raises(ValueError, match="`positions` expected 5"):
        prefill(lm, ids, chunk=2, positions=torch.arange(4))
    with pytest.raises(ValueError, match="chunk"):
        lm.generate(ids, max_new_tokens=1, prefill_chunk=0)
    with pytest.raises(ValueError, match="prefill_chunk"):
        lm.generate(ids, max_new_tokens=1, prefill_chunk=2, media={})
