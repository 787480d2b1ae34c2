"""Thinker + Talker joint loss (delay, depth, mtp) and the TalkerAlignment recipe."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import per_codebook_loss, text_lm_loss
from omnikit.fusion.joint import TalkerAlignment, thinker_talker_loss
from omnikit.fusion.towers import tower_parameters, train_towers


def _batch(model):
    kwargs = dict(model.contract_inputs([12, 10]).kwargs)
    return kwargs.pop("input_ids"), kwargs.pop("codes")[:, :, :6], kwargs


@pytest.mark.parametrize("strategy", ["delay", "depth", "mtp"])
def test_joint_loss_is_text_plus_per_codebook_and_reaches_both(strategy: str) -> None:
    model = omnikit.create_model("thinker_talker_tiny", strategy=strategy)
    ids, codes, media = _batch(model)
    loss = thinker_talker_loss(model, ids, codes, reply_start=4, text_weight=0.5, speech_weight=2.0, **media)
    with torch.no_grad():
        logits = model.omni(ids, **media)
        mask = torch.arange(ids.shape[1])[None] < media["lengths"][:, None]
        text = text_lm_loss(logits, ids, media_tokens=model.omni.thinker.media_tokens, key_padding_mask=mask)
        _, hidden = model.omni(ids, return_hidden=True, **media)  # the Talker reads embeddings + hidden states
        states = model.omni.thinker.embed(ids) + hidden
        reply = states[:, 4:].repeat_interleave(model.frames_per_token, dim=1)  # as ThinkerTalker.stream pairs them
        codebooks = per_codebook_loss(model.talker(codes, reply), codes)
    torch.testing.assert_close(loss.text, text)
    torch.testing.assert_close(loss.codebooks, codebooks)
    assert loss.codebooks.shape == (model.talker.config.num_codebooks,)
    torch.testing.assert_close(loss.total, 0.5 * text + 2.0 * codebooks.mean())
    loss.total.backward()
    groups = tower_parameters(model)
    params = dict(model.named_parameters())
    for tower in ("thinker", "talker"):
        assert any(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in groups[tower])


def test_the_loss_pairs_reply_tokens_with_frames_as_streaming_does() -> None:
    """Greedy streamed codes are the argmax of the teacher-forced pass over them when every reply state
    conditions ``frames_per_token`` steps, the pairing :func:`thinker_talker_loss` trains with (checked
    where step ``f + k`` has not yet read a code past the last frame: delay layout, frame ``f``, codebook ``k``)."""
    model = omnikit.create_model("thinker_talker_tiny").eval()
    assert model.frames_per_token == 2 and model.talker.delay == 3
    frames = 6
    reply = torch.randn(2, 4, model.talker.config.thinker_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes = torch.stack(list(model.talker.stream_codes(
            iter(reply.unbind(1)), batch_size=2, max_frames=frames, min_frames=frames, frames_per_token=2)), dim=2)
        paired, unpaired = (model.talker(codes, r)[..., : model.talker.config.codebook_size].argmax(-1).transpose(1, 2)
                            for r in (reply.repeat_interleave(2, dim=1), reply))
    before_end = (torch.arange(4)[:, None] + torch.arange(frames)[None]) <= frames  # (K, F)
    assert torch.equal(paired[:, before_end], codes[:, before_end])
    assert not torch.equal(unpaired[:, before_end], codes[:, before_end])


def test_forward_pairs_reply_tokens_with_frames_as_the_loss_does() -> None:
    """``ThinkerTalker.forward`` (teacher forcing) conditions ``frames_per_token`` frames on each reply token."""
    model = omnikit.create_model("thinker_talker_tiny").eval()
    ids, codes, media = _batch(model)
    media.pop("lengths")
    with torch.no_grad():
        _, hidden = model.omni(ids, return_hidden=True, **media)
        reply = (model.omni.thinker.embed(ids) + hidden)[:, 4:]
        expected = model.talker(codes, reply.repeat_interleave(model.frames_per_token, dim=1))
        torch.testing.assert_close(model(ids, codes, reply_start=4, **media), expected)
        assert not torch.allclose(model.talker(codes, reply), expected)


def test_follow_trains_the_talker_only_and_anchor_pulls_the_thinker_back() -> None:
    model = omnikit.create_model("thinker_talker_tiny")
    ids, codes, media = _batch(model)
    train_towers(model, ["thinker", "talker"])
    follow = TalkerAlignment(model, "follow").loss(ids, codes, reply_start=4, **media)
    follow.backward()
    groups = tower_parameters(model)
    params = dict(model.named_parameters())
    assert all(params[n].grad is None or not params[n].grad.any() for n in groups["thinker"])  # detached states
    assert any(params[n].grad is not None and params[n].grad.any() for n in groups["talker"])

    anchor = TalkerAlignment(model, "anchor")
    assert float(anchor.loss(ids, codes, reply_start=4, **media).detach()) == 0.0  # the snapshot itself
    with torch.no_grad():
        model.omni.thinker.decoder.blocks[0].mlp.down.weight.add_(0.1)
    drifted = anchor.loss(ids, codes, reply_start=4, **media)
    assert float(drifted.detach()) > 0
    model.zero_grad()
    drifted.backward()
    assert model.omni.thinker.decoder.blocks[0].mlp.down.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.talker.parameters())
    with pytest.raises(ValueError, match="mode"):
        TalkerAlignment(model, "regularize")
