"""A Qwen3.5-Omni-style assembly from the parts omnikit has: a hybrid MoE Thinker that hears, sees and speaks.

- :class:`HybridOmniThinker`: an :class:`OmniThinker` whose language model is a :class:`Thinker` on a
  :class:`~omnikit.layers.HybridConfig` (Gated DeltaNet blocks, gated full attention every 4th block,
  MoE MLPs with a gated shared expert, zero-centred norms), fed by the AuT audio tower and a
  Qwen3-VL-style vision tower without deepstack (as Qwen3.5's), with TMRoPE ids on the partial rotary
  dims (interleaved sections, :data:`QWEN3_5_OMNI`).
- :class:`Qwen3_5OmniSpeech`: that Thinker, Qwen3-Omni's MoE Talker with its code predictor and Code2Wav,
  speaking as :class:`~omnikit.fusion.Qwen3OmniSpeech` does (``generate`` / ``stream``); its ``forward`` is a
  teacher-forced joint pass (see :meth:`Qwen3_5OmniSpeech.forward`).

Qwen3.5-Omni's own configuration is not public here: the registered presets say which numbers are
published (Qwen3.5-35B-A3B's text model, Qwen3-Omni-30B-A3B's towers, Talker and Code2Wav) and which are
assumptions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from omnikit.audio.code2wav import Code2Wav
from omnikit.fusion.omni_speech import first_output
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.qwen3_omni_speech import Qwen3OmniSpeech, Qwen3SpeechIds
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN3_OMNI
from omnikit.layers.hybrid import HybridConfig
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3TalkerScores
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_tensor
from omnikit.vision.patch_grids import Grid

__all__ = ["QWEN3_5_OMNI", "HybridOmniThinker", "OmniSpeechScores", "Qwen3_5OmniSpeech", "check_hybrid_thinker"]

#: Qwen3-Omni's TMRoPE timing (13 ids/s, fractional, token-by-token audio-in-video interleave) on Qwen3.5's
#: interleaved M-RoPE sections 11/11/10, which cover the 64 rotary dims of its 256-wide heads (an assumption:
#: Qwen3.5-Omni's scheme is not public here).
QWEN3_5_OMNI = dataclasses.replace(QWEN3_OMNI, sections=(11, 11, 10))


def check_hybrid_thinker(text_model: object) -> None:
    """Raise unless ``text_model`` is a :class:`Thinker` built on a :class:`HybridConfig`."""
    if not isinstance(text_model, Thinker) or not isinstance(text_model.config, HybridConfig):
        raise OmnikitTypeError(
            f"`text_model` expected a Thinker built on a HybridConfig but got {type(text_model).__name__} "
            f"with {type(getattr(text_model, 'config', None)).__name__}"
        )


class HybridOmniThinker(OmniThinker):
    """Processor inputs -> logits ``(B, T, vocab)`` (see :class:`OmniThinker`), with a hybrid linear-attention
    language model: ``text_model`` a :class:`Thinker` whose config is a :class:`HybridConfig` with M-RoPE
    sections on its partial rotary dims; ``vision_encoder`` a tower whose ``forward_patches`` gives merged
    tokens (a tensor, or an output with ``.hidden_states``) and no deepstack features."""

    def __init__(self, text_model: Thinker, **towers: Any) -> None:
        """``towers``: :class:`OmniThinker`'s keywords (``audio_encoder``, ``vision_encoder``, ``scheme``,
        ``marker_tokens``)."""
        check_hybrid_thinker(text_model)
        deepstack = getattr(getattr(towers.get("vision_encoder"), "config", None), "deepstack_indexes", ())
        if deepstack:
            raise OmnikitValueError(
                f"`vision_encoder` expected no deepstack mergers (a hybrid Thinker adds none) but got {deepstack}"
            )
        super().__init__(text_model, **towers)

    def _visual(self, pixels: torch.Tensor, grids: Sequence[Grid]) -> torch.Tensor:
        """The merged visual tokens of all items ``(N / m^2, dim)``."""
        out = super()._visual(pixels, grids)
        return out if isinstance(out, torch.Tensor) else out.hidden_states


class OmniSpeechScores(NamedTuple):
    """What :meth:`Qwen3_5OmniSpeech.forward` returns.

    Attributes:
        log_probs: ``(B, T, K)`` log-likelihood of each given code (the Talker's loss is ``-log_probs`` over
            the frames that are trained).
        logits: ``(B, T, vocab)`` the Thinker's text logits (its own loss).
        talker: the Talker's :class:`~omnikit.speech.Qwen3TalkerScores` (code logits, final states).
    """

    log_probs: torch.Tensor
    logits: torch.Tensor
    talker: Qwen3TalkerScores


class Qwen3_5OmniSpeech(Qwen3OmniSpeech):
    """A :class:`HybridOmniThinker`, Qwen3-Omni's MoE Talker and Code2Wav (frozen: a codec is trained on its
    own), speaking: ``generate(...)`` and ``stream(...)`` as :class:`~omnikit.fusion.Qwen3OmniSpeech`
    (the Thinker's hybrid decoder keeps Gated DeltaNet states beside its KV caches, dynamic or static)."""

    def __init__(self, thinker: HybridOmniThinker, talker: Qwen3OmniTalker, code2wav: Code2Wav | None,
                 ids: Qwen3SpeechIds) -> None:
        if not isinstance(thinker, HybridOmniThinker):
            raise OmnikitTypeError(f"`thinker` expected a HybridOmniThinker but got {type(thinker).__name__}")
        if talker.config.thinker_dim != thinker.text_model.config.dim:
            raise OmnikitValueError(f"`talker.config.thinker_dim` ({talker.config.thinker_dim}) must equal the "
                                    f"Thinker width ({thinker.text_model.config.dim})")
        super().__init__(thinker, talker, code2wav, ids)
        if code2wav is not None:
            code2wav.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, codes: torch.Tensor,
        **media: Any,
    ) -> OmniSpeechScores:
        """Teacher-forced speech over a whole sequence, one code frame per position (a joint training pass).

        Args:
            input_ids, attention_mask: ``(B, T)`` the processor's ids and mask (left or right padding).
            codes: ``(B, K, T)`` the frame each position speaks.
            media: the processor's media keywords (:meth:`OmniThinker.fuse`).

        Position ``t`` of the Talker reads what the published Talker's prompt reads there (:meth:`prompt_states`:
        the Thinker's hidden state after ``accept_hidden_layer`` at media placeholders, its token embedding
        elsewhere) plus the summed embeddings of frame ``t - 1`` (``codec_bos``'s at an item's first valid
        position); the Talker runs over the Thinker's TMRoPE ids and padding mask. An ``accept_hidden_layer``
        below the Thinker's depth is read with a forward hook, which ``torch.compile(fullgraph=True)`` cannot
        trace (the tiny model reads the final states).
        """
        self.talker.check_codes(codes)
        check_tensor(codes, "codes", shape=(input_ids.shape[0], self.num_codebooks, input_ids.shape[1]))
        fused = self.thinker.fuse(input_ids, attention_mask, **media)
        text = self.thinker.text_model
        inputs = dict(media=fused.media, positions=fused.positions, key_padding_mask=fused.key_padding_mask)
        if self.ids.accept_hidden_layer == len(text.decoder.blocks):  # the final states: no hook, compiles whole
            logits, hidden = text(input_ids, return_hidden=True, **inputs)
        else:
            with first_output(self._prompt_layer()) as seen:
                logits = text(input_ids, **inputs)
            hidden = seen[0]
        valid = fused.key_padding_mask
        x = self.prompt_states(input_ids, hidden) + self.talker.previous_frames(codes, valid)
        scores = self.talker.score(x, codes, fused.positions, valid)
        return OmniSpeechScores(fused.with_absent(scores.log_probs), logits, scores)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """The Thinker's left-padded processor batch (:meth:`OmniThinker.contract_inputs`) plus ``codes (B, K, T)``
        in the residual codebooks' range."""
        base = self.thinker.contract_inputs(lengths, seed=seed)
        ids = base.kwargs["input_ids"]
        g = torch.Generator().manual_seed(seed + 1)
        c = self.talker.config
        codes = torch.randint(0, c.predictor_vocab_size, (ids.shape[0], c.num_codebooks, ids.shape[1]), generator=g)

        def item(b: int) -> ContractInputs:
            alone = base.item(b)
            steps = alone.kwargs["input_ids"].shape[1]
            return dataclasses.replace(alone, kwargs={**alone.kwargs, "codes": codes[b : b + 1, :, -steps:]},
                                       time_dims={**alone.time_dims, "codes": 2})

        return dataclasses.replace(base, kwargs={**base.kwargs, "codes": codes},
                                   time_dims={**base.time_dims, "codes": 2}, item=item)
