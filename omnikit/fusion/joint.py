"""Thinker + Talker training: the joint loss, and a recipe that fine-tunes the Thinker without
leaving the Talker behind.

::

    loss = thinker_talker_loss(model, input_ids, codes, reply_start=p, loss_mask=mask, **media)
    loss.total.backward()        # text loss + mean per-codebook Talker loss (delay, depth or mtp)

A Thinker-only fine-tune moves the Thinker's reply states, which the Talker was trained on, so the
Talker's codes degrade. :class:`TalkerAlignment` adds a term to each fine-tune step on a *replay*
batch of the speech data the Talker learned from:

- ``"follow"``: the Talker keeps training on the Thinker's *current* (detached) states, so it
  follows the Thinker (needs speech targets; trains the Talker too);
- ``"anchor"``: the Thinker's states the Talker reads on the replay prompts are pulled towards
  those of a frozen copy of the Thinker taken at the start (needs prompts only; the Talker stays frozen).

Both take omnikit's :class:`ThinkerTalker` (media as ``frames`` / ``audio_features``, ``lengths``)
or a published Qwen3-Omni pair, :class:`~omnikit.fusion.qwen3_omni_training.Qwen3OmniTrainingPair` (the
processor's keywords, ``attention_mask`` for padding; the Talker reads the prompt's states, so the
anchor holds those).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.fusion import ThinkerTalker, per_codebook_loss, text_lm_loss
from omnikit.fusion.qwen3_omni_training import Qwen3OmniTrainingPair
from omnikit.layers.masks import lengths_to_mask, masked_mean
from omnikit.utils.checks import check_choice

__all__ = ["ALIGNMENT_MODES", "JointLoss", "TalkerAlignment", "thinker_states", "thinker_talker_loss"]

ALIGNMENT_MODES = ("follow", "anchor")


@dataclass
class JointLoss:
    """``total = text_weight * text + speech_weight * codebooks.mean()``; ``codebooks``: ``(K,)``."""

    total: torch.Tensor
    text: torch.Tensor
    codebooks: torch.Tensor


def thinker_states(
    omni: nn.Module, input_ids: torch.Tensor, *, lengths: torch.Tensor | None = None, **media: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (B, T, V), states (B, T, thinker_dim))``: the states a Talker is conditioned on
    (token embedding + final hidden state, as :class:`ThinkerTalker` computes them)."""
    logits, hidden = omni(input_ids, lengths=lengths, return_hidden=True, **media)
    return logits, omni.thinker.embed(input_ids) + hidden


def thinker_talker_loss(
    model: ThinkerTalker | Qwen3OmniTrainingPair,
    input_ids: torch.Tensor,
    codes: torch.Tensor,
    *,
    reply_start: int,
    loss_mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    code_lengths: torch.Tensor | None = None,
    text_weight: float = 1.0,
    speech_weight: float = 1.0,
    detach_states: bool = False,
    **media: torch.Tensor,
) -> JointLoss:
    """Text loss of the Thinker plus per-codebook loss of the Talker, from one Thinker pass.

    Each reply token's state conditions ``model.frames_per_token`` Talker steps, as in
    :meth:`ThinkerTalker.stream`, so the Talker is trained the way it generates (a
    :class:`Qwen3OmniTrainingPair`: one frame per reply token, the prompt's states as context).

    Args:
        input_ids: ``(B, T)`` prompt + reply (placeholders for media); the reply starts at ``reply_start``.
        codes: ``(B, K, F)`` target codes of the spoken reply.
        loss_mask: ``(B, T)`` bool text targets to learn (e.g. :attr:`OmniBatch.loss_mask`).
        lengths: ``(B,)`` valid tokens; ``code_lengths``: ``(B,)`` valid code frames.
        detach_states: the Talker learns from the Thinker's states without moving the Thinker.
        media: ``frames``, ``audio_features``, ``audio_lengths`` (a :class:`Qwen3OmniTrainingPair`: the
            processor's keywords, ``attention_mask`` included).
    """
    logits, states = _states(model, input_ids, lengths, media)
    padding = _padding(input_ids, lengths, media)
    tokens = (model.thinker.text_model if isinstance(model, Qwen3OmniTrainingPair) else model.omni.thinker).media_tokens
    text = text_lm_loss(logits, input_ids, media_tokens=tokens, key_padding_mask=padding, loss_mask=loss_mask)
    states = states.detach() if detach_states else states
    mask = None if code_lengths is None else lengths_to_mask(code_lengths.to(codes.device), codes.shape[2])
    if isinstance(model, Qwen3OmniTrainingPair):
        context, reply = model.talker_inputs(input_ids, states, reply_start, codes.shape[2])
        nll = -model.talker(codes, reply, context=context).log_probs  # (B, F, K)
        codebooks = nll.mean(dim=(0, 1)) if mask is None else masked_mean(nll, mask[..., None], dim=(0, 1))
    else:
        code_logits = model.talker(codes, model.frame_states(states, reply_start), lengths=code_lengths)
        codebooks = per_codebook_loss(code_logits, codes, mask)
    return JointLoss(text_weight * text + speech_weight * codebooks.mean(), text, codebooks)


def _thinker(model: ThinkerTalker | Qwen3OmniTrainingPair) -> nn.Module:
    """The Thinker side of ``model`` (what a Thinker-only fine-tune trains)."""
    return model.thinker if isinstance(model, Qwen3OmniTrainingPair) else model.omni


def _states(model: ThinkerTalker | Qwen3OmniTrainingPair, input_ids: torch.Tensor, lengths: torch.Tensor | None,
            media: dict, thinker: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, states the Talker reads)`` of ``thinker`` (default: the model's own)."""
    if isinstance(model, Qwen3OmniTrainingPair):
        return model.thinker_states(input_ids, thinker=thinker, **media)
    return thinker_states(model.omni if thinker is None else thinker, input_ids, lengths=lengths, **media)


def _padding(input_ids: torch.Tensor, lengths: torch.Tensor | None, media: dict) -> torch.Tensor | None:
    """``(B, T)`` bool, True on valid tokens (from ``lengths`` or the processor's ``attention_mask``)."""
    if lengths is not None:
        return lengths_to_mask(lengths.to(input_ids.device), input_ids.shape[1])
    mask = media.get("attention_mask")
    return None if mask is None else mask.bool()


class TalkerAlignment:
    """Keeps the Talker aligned while the Thinker is fine-tuned (see the module docstring).

    ``loss(input_ids, codes, *, reply_start, **media)`` on a replay batch of the Talker's speech
    data; add it to the fine-tune loss. ``"anchor"`` snapshots the Thinker side (``model.omni``)
    when constructed.
    """

    def __init__(self, model: ThinkerTalker | Qwen3OmniTrainingPair, mode: str = "follow", *,
                 weight: float = 1.0) -> None:
        check_choice(mode, "mode", ALIGNMENT_MODES)
        self.model, self.mode, self.weight = model, mode, weight
        self.anchor = None
        if mode == "anchor":
            self.anchor = copy.deepcopy(_thinker(model)).eval().requires_grad_(False)

    def loss(
        self, input_ids: torch.Tensor, codes: torch.Tensor, *, reply_start: int, lengths: torch.Tensor | None = None,
        **media: torch.Tensor,
    ) -> torch.Tensor:
        if self.mode == "follow":
            joint = thinker_talker_loss(self.model, input_ids, codes, reply_start=reply_start, lengths=lengths,
                                        text_weight=0.0, detach_states=True, **media)
            return self.weight * joint.total
        _, states = _states(self.model, input_ids, lengths, media)
        with torch.no_grad():
            _, target = _states(self.model, input_ids, lengths, media, thinker=self.anchor)
        read = slice(0, reply_start) if isinstance(self.model, Qwen3OmniTrainingPair) else slice(reply_start, None)
        drift = (states[:, read] - target[:, read]).square().mean(-1)
        valid = _padding(input_ids, lengths, media)
        if valid is not None:
            valid = valid[:, read]
            return self.weight * (drift * valid).sum() / valid.sum().clamp_min(1)
        return self.weight * drift.mean()
