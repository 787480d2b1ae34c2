"""A published Qwen3-Omni Thinker and Talker as one trainable pair (teacher-forced codes, greedy codes).

For speaking with the published conditioning (speaker ids, the TTS pad and bos embeddings, codec control
codes) use :class:`~omnikit.fusion.qwen3_omni_speech.Qwen3OmniSpeech` (``load_hf(path, part="omni")``);
this pair keeps the simpler conditioning below, which is what the joint loss trains.

::

    thinker, talker = load_hf(path), load_hf(path, part="talker")
    layer = json.loads((path / "config.json").read_text())["talker_config"]["accept_hidden_layer"]
    speech = Qwen3OmniTrainingPair(thinker, talker, accept_hidden_layer=layer)
    scores = speech(codes, reply_start=p, **batch.model_inputs())        # Qwen3TalkerScores
    codes = speech.generate_codes(reply_start=p, frames=8, **batch.model_inputs())

The Talker is conditioned as in Qwen3-Omni: the prompt (positions ``< reply_start``) through its
``hidden_projection`` of the Thinker's hidden states after ``accept_hidden_layer`` layers
(transformers' ``hidden_states[accept_hidden_layer]``), each reply frame through its
``text_projection`` of the Thinker's embedding of the reply token it speaks (frame ``f`` <->
token ``reply_start + f``). The codes are the user's: the published speech tokenizer that made the
Talker's training targets is not available, so targets come from whatever codec the user has (see
docs/finetuning.md). :func:`~omnikit.fusion.joint.thinker_talker_loss` and
:class:`~omnikit.fusion.joint.TalkerAlignment` accept this model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3TalkerScores
from omnikit.utils.checks import OmnikitValueError, check_int_in_range

__all__ = ["Qwen3OmniTrainingPair"]


class Qwen3OmniTrainingPair(nn.Module):
    """``thinker`` (an :class:`OmniThinker`) + ``talker`` (:class:`Qwen3OmniTalker`); see the module docstring."""

    def __init__(self, thinker: OmniThinker, talker: Qwen3OmniTalker, *, accept_hidden_layer: int) -> None:
        super().__init__()
        depth = len(thinker.text_model.decoder.blocks)
        check_int_in_range(accept_hidden_layer, "accept_hidden_layer", 1, depth)
        if talker.config.thinker_dim != thinker.text_model.config.dim:
            raise OmnikitValueError(f"`talker.config.thinker_dim` ({talker.config.thinker_dim}) must equal the "
                                    f"Thinker width ({thinker.text_model.config.dim})")
        self.thinker, self.talker, self.accept_hidden_layer = thinker, talker, accept_hidden_layer

    def thinker_states(self, input_ids: torch.Tensor, *, thinker: OmniThinker | None = None, **inputs: Any
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T, V), states (B, T, D))``: the Thinker's logits and its hidden states after
        ``accept_hidden_layer`` layers (the final normalised ones when that is every layer); ``thinker``:
        another copy of the Thinker to run instead (a frozen anchor)."""
        thinker = self.thinker if thinker is None else thinker
        blocks = thinker.text_model.decoder.blocks
        if self.accept_hidden_layer == len(blocks):
            return thinker(input_ids, return_hidden=True, **inputs)
        seen: list[torch.Tensor] = []
        hook = blocks[self.accept_hidden_layer].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            logits = thinker(input_ids, **inputs)
        finally:
            hook.remove()
        return logits, seen[0]

    def talker_inputs(self, input_ids: torch.Tensor, states: torch.Tensor, reply_start: int, frames: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context (B, reply_start, D), reply_embeds (B, frames, D))`` for the Talker."""
        length = input_ids.shape[1]
        if reply_start <= 0 or reply_start + frames > length:
            raise OmnikitValueError(f"`reply_start` + frames expected within the {length} tokens (a prompt, then one "
                                    f"reply token per frame) but got {reply_start} + {frames}")
        reply = input_ids[:, reply_start : reply_start + frames]
        return states[:, :reply_start], self.thinker.text_model.embed(reply)

    def forward(self, codes: torch.Tensor, input_ids: torch.Tensor, *, reply_start: int, **inputs: Any
                ) -> Qwen3TalkerScores:
        """Teacher-forced Talker scores of ``codes (B, K, F)`` for the reply at ``reply_start``."""
        _, states = self.thinker_states(input_ids, **inputs)
        context, reply = self.talker_inputs(input_ids, states, reply_start, codes.shape[2])
        return self.talker(codes, reply, context=context)

    @torch.no_grad()
    def generate_codes(self, input_ids: torch.Tensor, *, reply_start: int, frames: int, **inputs: Any
                       ) -> torch.Tensor:
        """Greedy codes ``(B, K, frames)`` of the reply at ``reply_start`` (one frame per reply token)."""
        _, states = self.thinker_states(input_ids, **inputs)
        context, reply = self.talker_inputs(input_ids, states, reply_start, frames)
        talker, c = self.talker, self.talker.config
        prefix = talker.hidden_projection(context)
        previous = talker.codec_embedding.weight[c.codec_bos_id].expand(input_ids.shape[0], 1, c.dim)
        frames_out = []
        for f in range(frames):
            x = torch.cat([prefix, talker.text_projection(reply[:, : f + 1]) + previous], dim=1)
            logits, hidden = talker.codec_logits(x)
            first = logits[:, -1].argmax(-1)
            codes = talker.sample_residual(hidden[:, -1], first)
            frames_out.append(codes)
            previous = torch.cat([previous, talker.embed_frames(codes[:, :, None])], dim=1)
        return torch.stack(frames_out, dim=2)
