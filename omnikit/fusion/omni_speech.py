"""Published omni models that speak: Thinker -> Talker -> waveform, offline or streamed.

:class:`SpeakingOmni` holds a processor-style Thinker (:class:`~omnikit.fusion.OmniThinker`), a published
Talker and a codec decoder (``vocoder``). Subclasses (:class:`~omnikit.fusion.Qwen3OmniSpeech`,
:class:`~omnikit.fusion.Qwen2_5OmniSpeech`) say how the Talker's prompt is laid out and how one code frame
is made; this class runs the loop:

1. the Thinker prefills the prompt (the Talker's prompt reads some of its hidden states, captured then)
   and generates its reply token by token;
2. the Talker prefills its prompt once the first reply token exists, then makes one code frame per step;
   step ``s`` reads reply token ``s + 1`` (:class:`TextFeed`), pulled from the Thinker only when needed,
   so text and speech advance together;
3. the vocoder turns the frames into a waveform: offline at the end (:meth:`SpeakingOmni.generate`),
   or ``chunk_frames`` at a time (:meth:`SpeakingOmni.stream`, the :class:`SpeechChunk` shape of
   :class:`~omnikit.speech.ThinkerTalker`).

Sampling options follow transformers' ``generate`` of the published models: ``thinker_*`` and
``talker_*`` keywords (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
``max_new_tokens``, ``eos_token_id``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.models.decode_cache import CacheKind, CompileOption
from omnikit.models.generation import GenerationStep
from omnikit.models.sampling import Sampling, ban_tokens, sample_next
from omnikit.speech.thinker_talker import SpeechChunk
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive, check_tensor

__all__ = ["SAMPLING_OPTIONS", "SpeakingOmni", "SpeechOutput", "TextFeed", "pick_codes", "sampling_from"]

#: The sampling keywords that take a ``thinker_`` or ``talker_`` prefix.
SAMPLING_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
_LOOP_OPTIONS = ("max_new_tokens", "eos_token_id")
#: Processor keywords that go to the Thinker (the media and how they are laid out).
MEDIA_KEYS = ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
              "video_grid_thw", "video_second_per_grid", "use_audio_in_video")


@dataclass
class SpeechOutput:
    """What :meth:`SpeakingOmni.generate` returns.

    Attributes:
        tokens: ``(B, N)`` the Thinker's reply (finished items repeat their eos id).
        codes: ``(B, K, F)`` the Talker's codes (``K = 1`` for Qwen2.5-Omni), 0 after an item's end; None
            without audio.
        code_lengths: ``(B,)`` valid frames per item; None without audio.
        wav: ``(B, 1, S)`` the waveform (items of a batch zero-padded to the longest); None without audio.
        sample_rate: samples per second of ``wav``.
    """

    tokens: torch.Tensor
    codes: torch.Tensor | None = None
    code_lengths: torch.Tensor | None = None
    wav: torch.Tensor | None = None
    sample_rate: int | None = None


def sampling_from(options: Mapping[str, Any], prefix: str = "") -> Sampling:
    """transformers' sampling keywords (``do_sample`` ...) -> :class:`Sampling`. Greedy keeps the
    repetition penalty, as transformers applies it whether or not it samples. An invalid value's error
    names the keyword as the caller spelled it (``prefix``: ``"thinker_"``, ``"talker_"``)."""
    merged = dict(options)
    try:
        penalty = float(merged.get("repetition_penalty") or 1.0)
        if not merged.get("do_sample", False):
            return Sampling(repetition_penalty=penalty)
        top_k = merged.get("top_k")
        return Sampling(temperature=float(merged.get("temperature", 1.0)), top_k=top_k or None,
                        top_p=merged.get("top_p"), repetition_penalty=penalty)
    except (ValueError, TypeError) as err:
        named = re.sub(r"`(\w+)`", lambda m: f"`{prefix}{m[1]}`" if m[1] in SAMPLING_OPTIONS else m[0], str(err))
        error = OmnikitTypeError if isinstance(err, TypeError) else OmnikitValueError
        raise error(named if named != str(err) else f"thinker/talker sampling options {options}: {err}") from err


def pick_codes(
    logits: torch.Tensor, sampling: Sampling, *, banned: Sequence[int] = (), previous: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``logits (B, V)`` -> ``(B,)`` ids: ``banned`` ids never, the repetition penalty over ``previous (B, N)``."""
    return sample_next(ban_tokens(logits, banned), sampling, generator=generator, previous=previous)


@contextmanager
def first_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the output of ``module``'s first call inside the block (the prompt's prefill)."""
    seen: list[torch.Tensor] = []

    def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
        if not seen:
            seen.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


class TextFeed:
    """The Thinker's reply as a Talker reads it, one entry per Talker step.

    ``first`` is reply token 0 (the Talker's prompt ends with it); :meth:`entry` ``(s)`` is
    ``embed(step)`` of reply token ``s + 1`` (``embed`` maps a :class:`GenerationStep` to ``(B, D)``), except
    that an item's last token (its eos, or token ``max_new_tokens - 1``) becomes ``eos_marker`` and every entry
    after it ``pad_marker``, as transformers lays out the reply after the whole text exists. Tokens are pulled
    from the Thinker only when an entry needs them, so text and speech advance together.
    """

    def __init__(
        self, steps: Iterator[GenerationStep], *, max_new_tokens: int, eos_token_id: int | None,
        embed: Callable[[GenerationStep], torch.Tensor], eos_marker: torch.Tensor, pad_marker: torch.Tensor,
    ) -> None:
        self._steps, self._embed = steps, embed
        self.max_new_tokens, self.eos_token_id = max_new_tokens, eos_token_id
        self.eos_marker, self.pad_marker = eos_marker, pad_marker
        self.steps: list[GenerationStep] = []
        self._exhausted = False
        self.first = self._pull(0)
        if self.first is None:
            raise OmnikitValueError("the Thinker generated no token (`max_new_tokens` must be at least 1)")
        self.ended = self._is_last(self.first, 0)

    @property
    def tokens(self) -> list[torch.Tensor]:
        """``(B,)`` ids of every reply token generated so far."""
        return [s.tokens for s in self.steps]

    def _pull(self, index: int) -> GenerationStep | None:
        while len(self.steps) <= index and not self._exhausted:
            step = next(self._steps, None)
            if step is None:
                self._exhausted = True
            else:
                self.steps.append(step)
        return self.steps[index] if index < len(self.steps) else None

    def _is_last(self, step: GenerationStep, index: int) -> torch.Tensor:
        last = torch.full_like(step.finished, index == self.max_new_tokens - 1)
        return last | (step.tokens == self.eos_token_id) if self.eos_token_id is not None else last

    def entry(self, s: int) -> torch.Tensor:
        """``(B, D)``: what Talker step ``s`` reads."""
        step = self._pull(s + 1)
        if step is None:
            return self.pad_marker.expand(self.first.tokens.shape[0], -1)
        last = self._is_last(step, s + 1)
        out = torch.where(last[:, None], self.eos_marker, self._embed(step))
        out = torch.where(self.ended[:, None], self.pad_marker, out)
        self.ended = self.ended | last
        return out

    def finish(self) -> None:
        """Generate the rest of the reply (the speech ended first)."""
        while self._pull(len(self.steps)) is not None:
            pass


class DecodeMask:
    """The key padding mask of a decoding loop: the prompt's, then one valid slot per step (a static cache:
    one mask over all ``max_len`` slots, the same tensor every step)."""

    def __init__(self, prompt_mask: torch.Tensor, max_len: int | None) -> None:
        self.static = max_len is not None
        if self.static:
            self.mask = torch.ones(prompt_mask.shape[0], max_len, dtype=torch.bool, device=prompt_mask.device)
            self.mask[:, : prompt_mask.shape[1]] = prompt_mask
        else:
            self.mask = prompt_mask

    def step(self) -> torch.Tensor:
        if not self.static:
            self.mask = torch.cat((self.mask, torch.ones_like(self.mask[:, :1])), dim=1)
        return self.mask


@dataclass
class SpeakRun:
    """One call's settings and the Thinker's prompt-side results the Talker's prompt reads.

    Attributes:
        input_ids, attention_mask: the prompt ``(B, T)`` (mask: bool, True on tokens).
        media: the processor's media keywords (grids, ``use_audio_in_video``) for the Talker's positions.
        audio_tokens: ``(n_audio,)`` tokens per audio item, or None.
        prompt_hidden: ``(B, T, D)`` the Thinker's hidden states of the prompt at the layer the Talker reads.
        feed: the reply as the Talker reads it.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    media: dict[str, Any]
    audio_tokens: torch.Tensor | None
    prompt_hidden: torch.Tensor
    feed: TextFeed
    speaker: str
    talker_sampling: Sampling
    max_frames: int
    eos_ids: tuple[int, ...]
    generator: torch.Generator | None
    cache: CacheKind
    compile: CompileOption
    frames_made: list[torch.Tensor] = field(default_factory=list)

    def talker_positions(self, thinker: OmniThinker, ids: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """TMRoPE ids of the Talker's prompt ``ids`` (it holds the prompt's media placeholders)."""
        grids = {k: self.media.get(k) for k in ("image_grid_thw", "video_grid_thw", "video_second_per_grid")}
        return thinker.prompt_positions(ids, mask, audio_tokens=self.audio_tokens,
                                        use_audio_in_video=bool(self.media.get("use_audio_in_video", False)), **grids)


class SpeakingOmni(nn.Module):
    """A published Thinker, Talker and vocoder, speaking together. See the module docstring.

    Subclasses set ``thinker_defaults`` / ``talker_defaults`` (transformers' defaults), ``default_speaker`` and
    implement :meth:`_prompt_layer` (the Thinker module whose prefill output the Talker's prompt reads),
    :meth:`_feed` (the reply entries), :meth:`_talker_frames` (the Talker loop, one ``(B, K)`` frame per step),
    :meth:`_check_speaker` and :meth:`_decode` / :meth:`_stream_decoder` (codes -> waveform).
    """

    thinker_defaults: ClassVar[Mapping[str, Any]] = {"do_sample": False, "max_new_tokens": 1024}
    talker_defaults: ClassVar[Mapping[str, Any]] = {}
    default_speaker: str = ""
    #: Talker steps that make no frame (Qwen3-Omni's last code 0 gets no residual codes).
    talker_extra_steps: int = 0

    def __init__(self, thinker: OmniThinker, talker: nn.Module, vocoder: nn.Module | None) -> None:
        super().__init__()
        if not isinstance(thinker, OmniThinker):
            raise OmnikitTypeError(f"`thinker` expected an OmniThinker but got {type(thinker).__name__}")
        self.thinker, self.talker, self.vocoder = thinker, talker, vocoder

    # -- what subclasses define -------------------------------------------------------------------------------
    def _prompt_layer(self) -> nn.Module:
        raise NotImplementedError

    def _feed(self, steps: Iterator[GenerationStep], max_new_tokens: int, eos: int | None) -> TextFeed:
        raise NotImplementedError

    def _talker_frames(self, run: SpeakRun) -> Iterator[torch.Tensor]:
        """One ``(B, K)`` frame per Talker step (0 for items that have ended), appending each item's
        validity ``(B,)`` to ``run.frames_made``."""
        raise NotImplementedError

    def _check_speaker(self, speaker: str, vocoder_needed: bool) -> None:
        """Raise unless ``speaker`` is known (and, when ``vocoder_needed``, a vocoder exists)."""
        raise NotImplementedError

    def _talker_eos(self, options: Mapping[str, Any]) -> tuple[int, ...]:
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor, lengths: torch.Tensor, speaker: str) -> torch.Tensor:
        raise NotImplementedError

    def _stream_decoder(self, speaker: str, batch: int, **options: Any
                        ) -> AbstractContextManager[Callable[[torch.Tensor], torch.Tensor] | None]:
        """A context giving ``new frames (B, K, f) -> their waveform (B, 1, s)`` for a stream, or None to decode
        all frames at the end."""
        return nullcontext(None)

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------------------------
    def _options(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Split ``kwargs`` into the media keywords and the ``thinker_`` / ``talker_`` options (unknown: error)."""
        media = {k: kwargs.pop(k) for k in MEDIA_KEYS if k in kwargs}
        thinker, talker, unknown = {}, {}, []
        for key, value in kwargs.items():
            prefix, _, name = key.partition("_")
            if prefix in ("thinker", "talker") and name in SAMPLING_OPTIONS + _LOOP_OPTIONS:
                (thinker if prefix == "thinker" else talker)[name] = value
            else:
                unknown.append(key)
        if unknown:
            raise OmnikitTypeError(
                f"{type(self).__name__}.generate got unexpected keyword arguments {sorted(unknown)}; it takes the "
                f"processor's media keywords and thinker_/talker_ options {SAMPLING_OPTIONS + _LOOP_OPTIONS}"
            )
        return media, thinker, talker

    def _run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, speaker: str | None,
        talk: bool, vocoder_needed: bool, generator: torch.Generator | None, cache: CacheKind, compile: CompileOption,
        max_new_tokens: int | None, kwargs: dict[str, Any],
    ) -> tuple[SpeakRun | None, TextFeed | Iterator[GenerationStep]]:
        """Start the Thinker; with audio, also capture what the Talker's prompt needs (a :class:`SpeakRun`)."""
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if attention_mask is not None:
            check_tensor(attention_mask, "attention_mask", shape=tuple(input_ids.shape))
        if not isinstance(vocoder_needed, bool):  # the caller's `return_audio`
            raise OmnikitTypeError(f"`return_audio` expected a bool but got {type(vocoder_needed).__name__}")
        media, thinker_opts, talker_opts = self._options(dict(kwargs))
        speaker = self.default_speaker if speaker is None else speaker
        self._check_speaker(speaker, vocoder_needed)
        thinker_opts = {**self.thinker_defaults, **thinker_opts}
        if max_new_tokens is not None:
            thinker_opts["max_new_tokens"] = max_new_tokens
        talker_opts = {**self.talker_defaults, **talker_opts}
        new_tokens, eos = int(thinker_opts["max_new_tokens"]), thinker_opts.get("eos_token_id")
        check_positive(new_tokens, "thinker_max_new_tokens")
        max_frames = int(talker_opts.get("max_new_tokens", 4096)) - self.talker_extra_steps
        if talk:
            check_positive(max_frames, f"talker_max_new_tokens - {self.talker_extra_steps}")
        mask = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                else attention_mask.to(input_ids.device).bool())
        fused = self.thinker.fuse(input_ids, mask, **media)
        steps = self.thinker.text_model.stream_generate(
            input_ids, media=fused.media, positions=fused.positions, next_position=fused.next_position,
            key_padding_mask=fused.key_padding_mask, max_new_tokens=new_tokens,
            sampling=sampling_from(thinker_opts, "thinker_"), eos_token_id=eos, generator=generator, cache=cache,
            compile=compile,
        )
        if not talk:
            return None, steps
        with first_output(self._prompt_layer()) as seen:
            feed = self._feed(steps, new_tokens, eos)
        audio = fused.media.get("audio")
        run = SpeakRun(
            input_ids, mask, media, None if audio is None else audio.lengths, seen[0], feed, speaker,
            sampling_from(talker_opts, "talker_"), max_frames, self._talker_eos(talker_opts), generator, cache, compile,
        )
        return run, feed

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, speaker: str | None = None,
        return_audio: bool = True, max_new_tokens: int | None = None, generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic", compile: CompileOption = False, **kwargs: Any,
    ) -> SpeechOutput:
        """The reply's text and, with ``return_audio``, its codes and waveform (offline decoding, as
        transformers' ``generate``). ``kwargs``: the processor's media keywords (``hf_inputs(omni, inputs)``)
        and ``thinker_*`` / ``talker_*`` sampling options; ``max_new_tokens`` is ``thinker_max_new_tokens``."""
        run, feed = self._run(input_ids, attention_mask, speaker=speaker, talk=return_audio,
                              vocoder_needed=return_audio, generator=generator, cache=cache, compile=compile,
                              max_new_tokens=max_new_tokens, kwargs=kwargs)
        if run is None:
            steps = list(feed)
            return SpeechOutput(torch.stack([s.tokens for s in steps], dim=1))
        frames = list(self._talker_frames(run))
        run.feed.finish()
        codes, lengths = self._stack(frames, run)
        wav = self._decode(codes, lengths, run.speaker) if self.vocoder is not None else None
        return SpeechOutput(torch.stack(run.feed.tokens, dim=1), codes, lengths, wav, self.sample_rate)

    def _stack(self, frames: list[torch.Tensor], run: SpeakRun) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``(B, K)`` -> codes ``(B, K, F)`` (0 after an item's end) and valid frames ``(B,)``."""
        batch = run.input_ids.shape[0]
        if not frames:
            k = self.num_codebooks
            return run.input_ids.new_zeros(batch, k, 0), run.input_ids.new_zeros(batch)
        return torch.stack(frames, dim=2), torch.stack(run.frames_made, dim=1).sum(-1)

    @property
    def num_codebooks(self) -> int:
        raise NotImplementedError

    @torch.no_grad()
    def stream(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, speaker: str | None = None,
        chunk_frames: int = 4, max_new_tokens: int | None = None, generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic", compile: CompileOption = False, return_audio: bool = True,
        decoder_options: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Iterator[SpeechChunk]:
        """Text and speech together: a :class:`SpeechChunk` every ``chunk_frames`` code frames (text tokens made
        since the previous chunk, the chunk's codes and waveform), as soon as they exist. Options as
        :meth:`generate`; ``decoder_options`` go to the vocoder's chunked decoding (Code2Wav: ``left_context``,
        see :func:`~omnikit.fusion.qwen3_omni_speech.code2wav_stream`). Without ``return_audio`` the chunks hold
        codes and an empty waveform. A vocoder that cannot decode chunk by chunk decodes all codes in the last
        chunk."""
        check_positive(chunk_frames, "chunk_frames")
        started = time.perf_counter()
        run, _ = self._run(input_ids, attention_mask, speaker=speaker, talk=True, vocoder_needed=return_audio,
                           generator=generator, cache=cache, compile=compile, max_new_tokens=max_new_tokens,
                           kwargs=kwargs)
        with ExitStack() as contexts:
            options = dict(decoder_options or {})
            decoder = (contexts.enter_context(self._stream_decoder(run.speaker, input_ids.shape[0], **options))
                       if return_audio else None)
            yield from self._chunks(run, decoder, chunk_frames, return_audio, started)

    def _chunks(self, run: SpeakRun, decoder: Callable[[torch.Tensor], torch.Tensor] | None, chunk_frames: int,
                return_audio: bool, started: float) -> Iterator[SpeechChunk]:
        """:meth:`stream`'s loop: the Talker's frames gathered into chunks, decoded by ``decoder``."""
        input_ids = run.input_ids
        batch, sent, pending, everything = input_ids.shape[0], 0, [], []

        def chunk(final: bool) -> SpeechChunk:
            nonlocal sent
            tokens = run.feed.tokens
            text = torch.stack(tokens[sent:], dim=1) if len(tokens) > sent else input_ids.new_zeros(batch, 0)
            sent = len(tokens)
            codes = (torch.stack(pending, dim=2) if pending
                     else input_ids.new_zeros(batch, self.num_codebooks, 0))
            pending.clear()
            if decoder is not None and codes.shape[-1]:
                wav = decoder(codes)
            elif decoder is None and final and return_audio and everything:
                all_codes, lengths = self._stack(everything, run)
                wav = self._decode(all_codes, lengths, run.speaker)
            else:
                wav = torch.zeros(batch, 1, 0, device=input_ids.device)
            if final and decoder is not None and hasattr(decoder, "finish"):  # a decoder that holds audio back
                wav = torch.cat([wav, decoder.finish()], dim=-1)
            return SpeechChunk(text, codes, wav, time.perf_counter() - started)

        for frame in self._talker_frames(run):
            pending.append(frame)
            everything.append(frame)
            if len(pending) == chunk_frames:
                yield chunk(False)
        run.feed.finish()
        yield chunk(True)
