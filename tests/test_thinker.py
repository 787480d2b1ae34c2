"""Thinker: KV-cached generation == full forward (with media and TMRoPE), sampling controls, bidirectional media."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import Sampling, sample_next
from omnikit.fusion.models import TINY_TOKENS


def _omni_prompt(model, seed=0):
    kwargs = model.contract_inputs([14], seed=seed).kwargs
    kwargs.pop("lengths")
    return kwargs.pop("input_ids"), kwargs


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cached_generation_equals_full_forward_with_media(bidirectional: bool) -> None:
    model = omnikit.create_model("omni_early_tiny", bidirectional_media=bidirectional).eval()
    prompt, media = _omni_prompt(model)
    out = model.generate(prompt, max_new_tokens=6, **media)
    full_ids = torch.cat((prompt, out.tokens), dim=1)
    fused = model.fuse(full_ids, **media)
    with torch.no_grad():
        logits, hidden = model.thinker(full_ids, media=fused.media, positions=fused.positions, return_hidden=True)
    n = prompt.shape[1]
    greedy = model.thinker.suppress_placeholders(logits[:, n - 1 : -1]).argmax(-1)
    assert torch.equal(greedy, out.tokens), "greedy tokens from the cache differ"
    torch.testing.assert_close(hidden[:, n:], out.hidden, atol=1e-5, rtol=1e-4)
    # the positions of generated tokens continue from TMRoPE's next_position
    prompt_fused = model.fuse(prompt, **media)
    assert torch.equal(fused.positions[0, 0, n:], prompt_fused.next_position + torch.arange(6))


def test_bidirectional_media_sees_the_whole_item_but_text_stays_causal() -> None:
    model = omnikit.create_model("omni_early_tiny", bidirectional_media=True).eval()
    ids, media = _omni_prompt(model)
    frames2 = media["frames"].clone()
    frames2[:, :, :, -4:, -4:] += 1.0  # changes the last video token only
    with torch.no_grad():
        a = model(ids, **media)
        b = model(ids, **{**media, "frames": frames2})
        causal = omnikit.create_model("omni_early_tiny").eval()
        causal.load_state_dict(model.state_dict())
        c, d = causal(ids, **media), causal(ids, **{**media, "frames": frames2})
    assert not torch.allclose(a[:, 0], b[:, 0]), "first video token sees the last one (bidirectional)"
    assert torch.equal(c[:, :3], d[:, :3]), "causal: earlier tokens never see later ones"
    ids2 = ids.clone()
    ids2[:, -1] = 200
    with torch.no_grad():
        assert torch.equal(model(ids, **media)[:, :-1], model(ids2, **media)[:, :-1]), "text stays causal"


def test_stream_generate_yields_tokens_as_made_and_stops_at_eos() -> None:
    thinker = omnikit.create_model("thinker_tiny").eval()
    prompt = torch.randint(8, 256, (2, 5))
    seen = []
    greedy = thinker.generate(prompt, max_new_tokens=5, on_token=lambda s: seen.append(s.tokens))
    assert len(seen) == 5 and torch.equal(torch.stack(seen, 1), greedy.tokens)
    eos = int(greedy.tokens[0, 1])
    stopped = thinker.generate(prompt, max_new_tokens=5, eos_token_id=eos)
    row = stopped.tokens[0].tolist()
    assert row[: row.index(eos) + 1] == greedy.tokens[0, : row.index(eos) + 1].tolist()
    assert all(t == eos for t in row[row.index(eos):]), "a finished item repeats eos"


def test_sampling_controls() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, Sampling()).item() == 1
    assert sample_next(logits, Sampling(temperature=1.0, top_k=1), generator=g).item() == 1
    assert sample_next(logits, Sampling(temperature=1.0, top_p=0.01), generator=g).item() == 1
    draws = {sample_next(logits, Sampling(temperature=1.0, top_k=2), generator=g).item() for _ in range(50)}
    assert draws == {1, 3}
    penalised = sample_next(logits, Sampling(repetition_penalty=10.0), previous=torch.tensor([[1]]))
    assert penalised.item() == 3
    thinker = omnikit.create_model("thinker_tiny").eval()
    prompt = torch.randint(8, 256, (1, 4))
    run = lambda seed: thinker.generate(
        prompt, max_new_tokens=6, sampling=Sampling(temperature=1.5), generator=torch.Generator().manual_seed(seed)
    ).tokens
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)


def test_thinker_rejects_bad_ids() -> None:
    thinker = omnikit.create_model("thinker_tiny")
    with pytest.raises(ValueError, match=r"`input_ids` expected values in \[0, 256\)"):
        thinker(torch.tensor([[1000]]))
    with pytest.raises(ValueError, match="image placeholder tokens but `media` has no 'image'"):
        thinker(torch.tensor([[TINY_TOKENS.image, 9]]))


def test_generation_never_samples_a_media_placeholder() -> None:
    model = omnikit.create_model("omni_early_tiny").eval()
    prompt, media = _omni_prompt(model)
    thinker = model.thinker
    placeholders = list(thinker.media_tokens.as_dict().values())
    with torch.no_grad():
        thinker.lm_head.weight[placeholders] = 0.0
        thinker.lm_head.weight[placeholders[0]] = thinker.embed.weight.sum(0)  # the favourite by far
    out = model.generate(prompt, max_new_tokens=5, **media)
    assert not torch.isin(out.tokens, torch.tensor(placeholders)).any()
