"""``logits_to_keep``: a token LM's forward computes the LM head at its last positions only, and generation's
prompt asks for the last one (a long prompt's full logits would be most of its memory)."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

TOKEN_LMS = ["decoder_tiny", "qwen3_5_tiny", "gemma4_tiny", "gemma4_omni_tiny", "thinker_tiny", "qwen3_5_vl_tiny"]


def _token_lm(name: str) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = omnikit.create_model(name).eval()
    if name == "qwen3_5_vl_tiny":  # its text model: the DeepstackThinker that generation runs
        model = model.text_model
    return model, model.contract_inputs([6, 4], seed=1).kwargs


@pytest.mark.parametrize("name", TOKEN_LMS)
def test_kept_logits_equal_the_last_positions_of_all_logits(name: str) -> None:
    model, kwargs = _token_lm(name)
    with torch.no_grad():
        every, hidden = model(**kwargs, return_hidden=True)
        last_two, kept_hidden = model(**kwargs, return_hidden=True, logits_to_keep=2)
        assert torch.equal(model(**kwargs, logits_to_keep=0), every)
    assert last_two.shape == (2, 2, every.shape[-1])
    torch.testing.assert_close(last_two, every[:, -2:], rtol=1e-5, atol=1e-5)
    assert torch.equal(kept_hidden, hidden)  # the hidden states stay whole


@pytest.mark.parametrize("bad, error", [(-1, OmnikitValueError), (1.5, OmnikitTypeError)])
def test_bad_logits_to_keep_is_named(bad: object, error: type) -> None:
    model, kwargs = _token_lm("decoder_tiny")
    with pytest.raises(error, match="logits_to_keep"):
        model(**kwargs, logits_to_keep=bad)


@pytest.mark.parametrize("prefill_chunk", [None, 3])
def test_generation_runs_the_lm_head_on_the_prompts_last_position_only(prefill_chunk: int | None) -> None:
    model, _ = _token_lm("decoder_tiny")
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))
    try:
        out = model.generate(ids, max_new_tokens=3, prefill_chunk=prefill_chunk)
    finally:
        hook.remove()
    assert rows == [1] * (len(rows)) and len(rows) == (1 if prefill_chunk is None else 3) + 3
    with torch.no_grad():  # the same first token as the full forward's last logits
        assert torch.equal(out.tokens[:, 0], model(ids)[:, -1].argmax(-1))
