"""Moshi (Kyutai): the full-duplex model of :mod:`omnikit.speech.duplex` with its published parts, a
per-codebook depth decoder and the Mimi codec that hears the user and voices the reply.

``forward`` / ``loss`` / ``stream`` are :class:`~omnikit.speech.DuplexModel`'s, on codes;
:meth:`Moshi.converse` is the live loop on audio (one Mimi frame of the user's voice in, the
inner-monologue text token and, one step later, a frame of the reply's audio out) and
:meth:`Moshi.generate` continues a prompt as transformers' ``MoshiForConditionalGeneration.generate``
does. :func:`omnikit.convert.load_hf` builds it from a ``MoshiForConditionalGeneration`` checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from omnikit.audio.mimi import MimiConfig, MimiTokenizer
from omnikit.models.sampling import GREEDY, Sampling
from omnikit.speech.duplex import DuplexConfig, DuplexModel
from omnikit.utils.checks import OmnikitValueError, check_ids, check_positive, check_tensor

__all__ = ["Moshi", "MoshiAudioStep", "MoshiConfig", "MoshiGeneration"]


@dataclass
class MoshiConfig(DuplexConfig):
    """A :class:`DuplexConfig` (``per_codebook_depth`` on) and the Mimi codec's :class:`MimiConfig`."""

    codec: MimiConfig = field(default_factory=MimiConfig)
    per_codebook_depth: bool = True


@dataclass
class MoshiGeneration:
    """What :meth:`Moshi.generate` returns: the new text ``tokens (B, N)`` and the new assistant frames
    ``codes (B, K, N - max(delays))`` (the last steps' delayed codebooks belong to frames not finished yet)."""

    tokens: torch.Tensor
    codes: torch.Tensor


@dataclass
class MoshiAudioStep:
    """One step of :meth:`Moshi.converse`: the inner-monologue ``text (B,)``, the step's codes ``(B, K)``
    (step layout), and the reply frame finished at this step ``frame (B, K)`` with its audio
    ``wav (B, channels, hop)`` (both None during the first ``max(delays)`` steps)."""

    text: torch.Tensor
    codes: torch.Tensor
    frame: torch.Tensor | None
    wav: torch.Tensor | None


class Moshi(DuplexModel):
    """Moshi: temporal transformer, per-codebook depth decoder, and Mimi under ``audio_encoder``.

    The codec is the tokenizer, not a trained part: its parameters are frozen
    (``requires_grad=False``; training and LoRA see the temporal and depth transformers and the
    embeddings). Weights: ``embed`` (text, then assistant, then user tables stacked), ``temporal``,
    ``text_head``, ``depth``, ``audio_encoder``.
    """

    def __init__(self, config: MoshiConfig) -> None:
        if not config.per_codebook_depth:
            raise OmnikitValueError("Moshi expected `per_codebook_depth=True` (its depth decoder's layout)")
        super().__init__(config)
        codec = config.codec
        if codec.frame_rate != config.frame_rate or config.num_codebooks > codec.num_quantizers:
            raise OmnikitValueError(
                f"`codec` expected frame_rate {config.frame_rate} and at least {config.num_codebooks} codebooks "
                f"but got {codec.frame_rate} and {codec.num_quantizers}"
            )
        if codec.codebook_size != config.codebook_size:
            raise OmnikitValueError(
                f"`codec` expected codebook_size {config.codebook_size} but got {codec.codebook_size}"
            )
        self.audio_encoder = MimiTokenizer(codec)
        self.audio_encoder.num_codebooks = config.num_codebooks
        self.audio_encoder.requires_grad_(False)

    def silence(self, batch_size: int) -> torch.Tensor:
        """The codes ``(B, K)`` of one frame of silence (what a user who says nothing sends)."""
        codec = self.audio_encoder
        weight = codec.downsample.conv.weight
        return codec.encode(weight.new_zeros(batch_size, codec.config.channels, codec.hop))[..., 0]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        user_codes: torch.Tensor,
        moshi_codes: torch.Tensor,
        *,
        max_new_tokens: int,
        text_sampling: Sampling = GREEDY,
        audio_sampling: Sampling = GREEDY,
        generator: torch.Generator | None = None,
        **stream_options: Any,
    ) -> MoshiGeneration:
        """Continue a prompt of ``T`` frames (text ``(B, T)``, user and assistant codes ``(B, K, T)``) by
        ``max_new_tokens`` steps while the user is silent; greedy by default.

        Equals transformers' ``generate(input_ids=, user_audio_codes=, moshi_audio_codes=,
        max_new_tokens=)`` (its unconditional first frame is this model's start column): its text
        after the ``1 + T`` prompt positions and its audio codes after the ``T`` prompt frames
        (transformers returns those too). ``stream_options`` go to :meth:`stream` (``cache``, ``compile`` ...).
        """
        check_positive(max_new_tokens, "max_new_tokens")
        check_ids(check_tensor(input_ids, "input_ids", ndim=2), "input_ids", self.config.text_vocab + 1,
                  what="text ids (the start id included)")
        batch, frames = input_ids.shape
        k = self.config.num_codebooks
        for codes, name in ((user_codes, "user_codes"), (moshi_codes, "moshi_codes")):
            check_tensor(codes, name, shape=(batch, k, frames), floating=False)
            check_ids(codes, name, self.pad + 1, what="codes (pad included)")
        blank = self.silence(batch)
        user = itertools.chain(user_codes.unbind(2), itertools.repeat(blank, max_new_tokens))
        steps = list(self.stream(user, text_sampling=text_sampling, audio_sampling=audio_sampling,
                                 generator=generator, prompt=(input_ids, moshi_codes), **stream_options))
        done = [s.frame for s in steps[frames + max(self.delays) :]]  # the frames after the prompt's
        codes = torch.stack(done, dim=2) if done else moshi_codes.new_zeros(batch, k, 0)
        return MoshiGeneration(torch.stack([s.text for s in steps[frames:]], dim=1), codes)

    @torch.no_grad()
    def converse(self, user_audio: Iterable[torch.Tensor], **stream_options: Any) -> Iterator[MoshiAudioStep]:
        """The full-duplex loop on audio: for every frame of the user's voice ``(B, channels, hop)`` as it
        arrives, Mimi encodes it (streaming), the model takes its step (:meth:`stream`) and Mimi decodes
        the reply frame finished at that step (streaming). Greedy unless ``stream_options`` give sampling."""
        codec = self.audio_encoder
        frames = iter(user_audio)
        first = next(frames, None)
        if first is None:
            return
        check_tensor(first, "user_audio", shape=("B", codec.config.channels, codec.hop), floating=True)

        def heard() -> Iterator[torch.Tensor]:
            for wav in itertools.chain([first], frames):
                check_tensor(wav, "user_audio", shape=(first.shape[0], codec.config.channels, codec.hop),
                             floating=True)
                yield codec.encode(wav)[..., 0]

        with codec.streaming(first.shape[0]):
            for step in self.stream(heard(), **stream_options):
                wav = None if step.frame is None else codec.decode(step.frame[..., None])
                yield MoshiAudioStep(step.text, step.codes, step.frame, wav)
