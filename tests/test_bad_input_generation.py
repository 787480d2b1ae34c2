"""Language-model generation under bad and transformers-style input: clear errors, HF sampling keywords."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import Sampling


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model("decoder_tiny").eval()


def test_empty_prompt_is_refused(lm) -> None:
    with pytest.raises(ValueError, match=r"`input_ids` expected a prompt of at least one token but got shape \(2, 0\)"):
        lm.generate(torch.zeros(2, 0, dtype=torch.long), max_new_tokens=2)


def test_transformers_sampling_keywords_equal_the_sampling_object(lm) -> None:
    ids = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(1))
    hf_style = lm.generate(ids, max_new_tokens=4, do_sample=True, temperature=0.7, top_k=20, top_p=0.9,
                           generator=torch.Generator().manual_seed(2))
    ours = lm.generate(ids, max_new_tokens=4, sampling=Sampling(temperature=0.7, top_k=20, top_p=0.9),
                       generator=torch.Generator().manual_seed(2))
    assert torch.equal(hf_style.tokens, ours.tokens)
    greedy = lm.generate(ids, max_new_tokens=4)
    assert torch.equal(lm.generate(ids, max_new_tokens=4, do_sample=False).tokens, greedy.tokens)
    penalised = lm.generate(ids, max_new_tokens=4, repetition_penalty=1.5)
    assert torch.equal(penalised.tokens,
                       lm.generate(ids, max_new_tokens=4, sampling=Sampling(repetition_penalty=1.5)).tokens)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"temperature": 0.7}, ValueError, r"\['temperature'\] only apply with do_sample=True"),
    ({"top_p": 0.9, "sampling": Sampling(temperature=1.0)}, ValueError, "either `sampling` or transformers-style"),
    ({"do_sample": "yes"}, TypeError, "`do_sample` expected a bool"),
    ({"do_sample": True, "temperature": -1.0}, ValueError, "temperature"),
])
def test_bad_sampling_keywords_are_named(lm, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        lm.generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=2, **kwargs)
