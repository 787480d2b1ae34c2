"""Thinker-Talker: text and speech generated together, speech decoded to waveform chunk by chunk.

::

    tt = omnikit.create_model("thinker_talker_tiny")
    for chunk in tt.stream(prompt_ids, frames=frames, audio_features=mels, max_new_tokens=16):
        print(chunk.text_tokens, chunk.wav.shape, chunk.elapsed)   # first chunk: time to first audio

The Talker pulls the Thinker's reply one token at a time (``frames_per_token`` code frames per
token), so speech starts after the first token instead of after the whole reply; complete code
frames go through the streaming causal codec (``omnikit.audio.SEANetCodec`` in the tiny model)
``chunk_frames`` at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.audio.interface import CodeDecoder, check_codec
from omnikit.models.decode_cache import CacheKind, CompileOption
from omnikit.models.sampling import GREEDY, Sampling
from omnikit.speech.talker import Talker
from omnikit.streaming import StreamingContainer, streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_positive

__all__ = ["SpeechChunk", "ThinkerTalker"]


@dataclass
class SpeechChunk:
    """One piece of the streamed answer.

    Attributes:
        text_tokens: ``(B, n)`` Thinker tokens made since the previous chunk (n may be 0).
        codes: ``(B, K, f)`` code frames of this chunk.
        wav: ``(B, 1, f * hop)`` their decoded waveform.
        elapsed: seconds since the call started when this chunk was ready.
    """

    text_tokens: torch.Tensor
    codes: torch.Tensor
    wav: torch.Tensor
    elapsed: float


class ThinkerTalker(StreamingContainer, nn.Module):
    """An omni model (the Thinker side), a :class:`Talker` and a streaming causal codec (frozen).

    ``omni`` is an early-fusion omni model such as :class:`omnikit.fusion.EarlyFusionOmni`: it has a
    ``thinker`` (``embed``, ``config.dim``), ``fuse``, ``stream_generate(input_ids, fused=)`` and takes
    ``return_hidden=True``.

    ``codec`` follows the codec interface (``decode``, ``sample_rate``, ``num_codebooks``,
    ``codebook_size``) and streams (e.g. :class:`omnikit.audio.SEANetCodec`).

    ``forward(input_ids (B, T), codes (B, K, F), *, reply_start=0, lengths=None, **media)`` is the
    Talker's teacher-forced training pass: code logits ``(B, F, K, vocab)`` conditioned on the
    Thinker's states (embedding + final hidden state) of tokens ``reply_start:``, each token's state
    repeated for the ``frames_per_token`` frames it conditions, as :meth:`stream` pairs them.
    ``lengths``: valid tokens, also used as the valid code frames.
    """

    supports_streaming = False

    def __init__(self, omni: nn.Module, talker: Talker, codec: CodeDecoder, *, frames_per_token: int = 1) -> None:
        super().__init__()
        check_codec(codec, "codec", encodes=False)
        if talker.config.thinker_dim != omni.thinker.config.dim:
            raise OmnikitValueError(
                f"`talker.config.thinker_dim` ({talker.config.thinker_dim}) must equal the Thinker width "
                f"({omni.thinker.config.dim})"
            )
        check_positive(frames_per_token, "frames_per_token")
        for attr in ("num_codebooks", "codebook_size"):
            if getattr(codec, attr) != getattr(talker.config, attr):
                raise OmnikitValueError(
                    f"`codec.{attr}` ({getattr(codec, attr)}) must equal the Talker's ({getattr(talker.config, attr)})"
                )
        self.omni, self.talker, self.codec = omni, talker, codec
        codec.requires_grad_(False)  # a codec is trained on its own; the Talker learns its codes
        self.frames_per_token = frames_per_token

    @property
    def output_dim(self) -> int:
        return self.talker.config.vocab

    def forward(
        self,
        input_ids: torch.Tensor,
        codes: torch.Tensor,
        *,
        reply_start: int = 0,
        lengths: torch.Tensor | None = None,
        **media: torch.Tensor,
    ) -> torch.Tensor:
        _, hidden = self.omni(input_ids, lengths=lengths, return_hidden=True, **media)
        states = self.omni.thinker.embed(input_ids) + hidden
        return self.talker(codes, self.frame_states(states, reply_start), lengths=lengths)

    def frame_states(self, states: torch.Tensor, reply_start: int) -> torch.Tensor:
        """``(B, T, thinker_dim)`` Thinker states -> ``(B, (T - reply_start) * frames_per_token, thinker_dim)``:
        the state of each reply token once per code frame it conditions, as :meth:`stream` pairs them."""
        return states[:, reply_start:].repeat_interleave(self.frames_per_token, dim=1)

    @torch.no_grad()
    def stream(
        self,
        input_ids: torch.Tensor,
        *,
        max_new_tokens: int = 32,
        max_frames: int = 64,
        chunk_frames: int = 4,
        text_sampling: Sampling = GREEDY,
        speech_sampling: Sampling = GREEDY,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic",
        compile: CompileOption = False,
        **media: torch.Tensor,
    ) -> Iterator[SpeechChunk]:
        """Generate text and speech together, yielding a :class:`SpeechChunk` every ``chunk_frames`` frames.

        If the speech ends first (``max_frames`` or ``eos``), the text reply is finished and comes
        in a last chunk without audio. ``cache`` and ``compile`` go to both the Thinker's and the
        Talker's decoding (``cache="static"``: preallocated caches sized by ``max_new_tokens`` and
        ``max_frames``; see ``docs/compile.md``).

        ``media``: ``frames``, ``audio_features``, ``audio_lengths`` as for the omni model.
        """
        check_positive(chunk_frames, "chunk_frames")
        started = time.perf_counter()
        fused = self.omni.fuse(input_ids, **media)  # the one check of the prompt and its media
        batch = input_ids.shape[0]
        tokens: list[torch.Tensor] = []

        def reply_states() -> Iterator[torch.Tensor]:
            for step in self.omni.stream_generate(
                input_ids, fused=fused, max_new_tokens=max_new_tokens, sampling=text_sampling,
                eos_token_id=eos_token_id, generator=generator, cache=cache, compile=compile,
            ):
                tokens.append(step.tokens)
                yield step.embeds + step.hidden

        sent = 0
        frames: list[torch.Tensor] = []

        def flush() -> SpeechChunk:
            nonlocal sent
            k = self.talker.config.num_codebooks
            codes = torch.stack(frames, dim=2) if frames else input_ids.new_zeros(batch, k, 0)
            wav = self.codec.decode(codes) if frames else torch.zeros(batch, 1, 0, device=input_ids.device)
            frames.clear()
            new = torch.stack(tokens[sent:], dim=1) if len(tokens) > sent else input_ids.new_zeros(batch, 0)
            sent = len(tokens)
            return SpeechChunk(new, codes, wav, time.perf_counter() - started)

        replies = reply_states()
        with streaming(self.codec, batch):
            for frame in self.talker.stream_codes(
                replies, batch_size=batch, max_frames=max_frames, frames_per_token=self.frames_per_token,
                sampling=speech_sampling, generator=generator, cache=cache, compile=compile,
            ):
                frames.append(frame)
                if len(frames) == chunk_frames:
                    yield flush()
            for _ in replies:  # speech ended first: finish the text reply
                pass
            if frames or len(tokens) > sent:
                yield flush()

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """The omni model's multimodal batch plus code targets aligned with the tokens."""
        inputs = self.omni.contract_inputs(lengths, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        cfg = self.talker.config
        codes = torch.randint(0, cfg.codebook_size, (len(lengths), cfg.num_codebooks, max(lengths)), generator=g)
        kwargs = {**inputs.kwargs, "codes": codes}
        return ContractInputs(kwargs, inputs.lengths, {**inputs.time_dims, "codes": 2}, inputs.lengths_kwarg)
