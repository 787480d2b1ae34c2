"""Qwen3-Omni speaking: the MoE Thinker, the MoE Talker with its code predictor, and Code2Wav.

The Talker's prompt is transformers' ``Qwen3OmniMoeForConditionalGeneration.generate`` layout:

- the user turns of the prompt (tokens whose turn, after the last ``<|im_start|>``, is ``user``), gathered
  and right-aligned: media placeholders read ``hidden_projection`` of the Thinker's hidden state at layer
  ``accept_hidden_layer``, other tokens ``text_projection`` of their embedding;
- the assistant turn, 9 positions: ``text_projection`` of ``<|im_start|>assistant\\n``, 4 ``tts_pad``, ``tts_bos``
  and reply token 0 (Thinker embeddings), plus codec embeddings ``0, 0, 0, nothink, think_bos, think_eos,
  speaker, codec_pad, codec_bos``.

Step ``s`` reads the summed embeddings of the previous frame's 16 codes plus ``text_projection`` of reply token
``s + 1`` (``tts_eos`` for the last one, ``tts_pad`` after). Code 0 never takes the last 1024 ids of the codec
vocabulary but ``codec_eos``; codes 1..15 come from the code predictor (top-k 50, top-p 0.8 when sampling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.audio.code2wav import Code2Wav
from omnikit.fusion.omni_speech import DecodeMask, SpeakingOmni, SpeakRun, TextFeed, pick_codes
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.models.decode_cache import check_cache_settings, compiled_step
from omnikit.models.generation import GenerationStep
from omnikit.models.sampling import GREEDY, Sampling
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker
from omnikit.streaming import streaming
from omnikit.utils.checks import OmnikitValueError

__all__ = ["Qwen3OmniSpeech", "Qwen3SpeechIds", "code2wav_stream"]

#: transformers' code predictor sampling when the Talker samples.
PREDICTOR_SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=0.8)


@dataclass(frozen=True)
class Qwen3SpeechIds:
    """The token and codec ids of the speech loop (``Qwen3OmniMoeConfig`` and its ``talker_config``)."""

    im_start: int = 151644
    im_end: int = 151645
    user: int = 872
    assistant: int = 77091
    tts_bos: int = 151672
    tts_eos: int = 151673
    tts_pad: int = 151671
    codec_nothink: int = 4203
    codec_think_bos: int = 4204
    codec_think_eos: int = 4205
    codec_pad: int = 4196
    codec_bos: int = 4197
    codec_eos: int = 4198
    accept_hidden_layer: int = 18
    speakers: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Qwen3SpeechIds:
        """From a ``Qwen3OmniMoeForConditionalGeneration`` ``config.json`` dict (transformers' defaults when
        absent)."""
        talker = config.get("talker_config", {})
        d = cls()
        top = {"im_start": "im_start_token_id", "im_end": "im_end_token_id", "user": "user_token_id",
               "assistant": "assistant_token_id", "tts_bos": "tts_bos_token_id", "tts_eos": "tts_eos_token_id",
               "tts_pad": "tts_pad_token_id"}
        codec = {"codec_nothink": "codec_nothink_id", "codec_think_bos": "codec_think_bos_id",
                 "codec_think_eos": "codec_think_eos_id", "codec_pad": "codec_pad_id", "codec_bos": "codec_bos_id",
                 "codec_eos": "codec_eos_token_id", "accept_hidden_layer": "accept_hidden_layer"}
        values = {k: config.get(v, getattr(d, k)) for k, v in top.items()}
        values.update({k: talker.get(v, getattr(d, k)) for k, v in codec.items()})
        speakers = {str(k).lower(): int(v) for k, v in (talker.get("speaker_id") or {}).items()}
        return cls(**values, speakers=speakers)


@contextmanager
def code2wav_stream(
    code2wav: Code2Wav, batch: int, left_context: int | None = None
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """A context giving ``decode(new frames (B, K, f)) -> (B, 1, s)`` for a stream of ``batch`` items.

    ``left_context=None`` (default): Code2Wav streams (its attention KV cache and convolution states carry
    over), so the pieces add up to :meth:`Code2Wav.decode` of all frames and each call costs its own frames.
    An int: each call decodes its frames afresh with up to ``left_context`` earlier frames in front and keeps
    the samples after theirs (transformers' ``chunked_decode`` scheme; exact only when the context covers the
    decoder's receptive field, and every call re-decodes the context).
    """
    if left_context is None:
        with code2wav.streaming(batch):
            yield code2wav.decode
        return
    if not isinstance(left_context, int) or left_context < 0:
        raise OmnikitValueError(f"`left_context` expected an int >= 0 or None but got {left_context!r}")
    history: list[torch.Tensor] = []

    def decode(new: torch.Tensor) -> torch.Tensor:
        before = torch.cat(history, dim=-1) if history else new[..., :0]
        context = min(left_context, before.shape[-1])
        wav = code2wav.decode(torch.cat((before[..., before.shape[-1] - context:], new), dim=-1))
        seen = torch.cat((before, new), dim=-1)
        history[:] = [seen[..., seen.shape[-1] - min(left_context, seen.shape[-1]):]]
        return wav[..., int(code2wav.output_lengths(torch.tensor(context))) if context else 0:]

    yield decode


class Qwen3OmniSpeech(SpeakingOmni):
    """Qwen3-Omni's Thinker, Talker and Code2Wav (``vocoder``), speaking; see the module docstring.

    ``generate(**hf_inputs(omni, inputs), max_new_tokens=, speaker="Ethan", return_audio=True, ...)`` and
    ``stream(...)`` are :class:`SpeakingOmni`'s; the defaults are transformers' (the Talker samples with
    temperature 0.9, top-k 50 and repetition penalty 1.05 unless ``talker_do_sample=False``).
    """

    default_speaker = "Ethan"
    talker_extra_steps = 1  # transformers' last code 0 gets no residual codes: talker_max_new_tokens - 1 frames
    talker_defaults: ClassVar[Mapping[str, Any]] = {
        "max_new_tokens": 4096, "do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9,
        "repetition_penalty": 1.05,
    }

    def __init__(self, thinker: Qwen3OmniThinker, talker: Qwen3OmniTalker, code2wav: Code2Wav | None,
                 ids: Qwen3SpeechIds) -> None:
        super().__init__(thinker, talker, code2wav)
        self.ids = ids
        self.thinker_defaults = {"do_sample": False, "max_new_tokens": 1024, "eos_token_id": ids.im_end}
        depth = len(thinker.text_model.decoder.blocks)
        if not 1 <= ids.accept_hidden_layer <= depth:
            raise OmnikitValueError(
                f"`accept_hidden_layer` expected an int in [1, {depth}] but got {ids.accept_hidden_layer}"
            )

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate if self.vocoder is not None else 24000

    @property
    def num_codebooks(self) -> int:
        return self.talker.config.num_codebooks

    def _prompt_layer(self) -> nn.Module:
        decoder = self.thinker.text_model.decoder
        layer = self.ids.accept_hidden_layer
        return decoder.norm if layer == len(decoder.blocks) else decoder.blocks[layer - 1]

    def _check_speaker(self, speaker: str, vocoder_needed: bool) -> None:
        if speaker.lower() not in self.ids.speakers:
            raise OmnikitValueError(f"`speaker` {speaker!r} is not one of {sorted(self.ids.speakers)}")
        if vocoder_needed and self.vocoder is None:
            raise OmnikitValueError("return_audio=True needs the code2wav vocoder, which this model does not have")

    def _talker_eos(self, options: Mapping[str, Any]) -> tuple[int, ...]:
        return (int(options.get("eos_token_id", self.ids.codec_eos)),)

    def _markers(self) -> torch.Tensor:
        """``(3, dim)``: ``text_projection`` of the Thinker embeddings of ``tts_bos``, ``tts_eos``, ``tts_pad``."""
        ids = torch.tensor([self.ids.tts_bos, self.ids.tts_eos, self.ids.tts_pad],
                           device=next(self.parameters()).device)
        return self.talker.text_projection(self.thinker.text_model.embed(ids))

    def _feed(self, steps: Iterator[GenerationStep], max_new_tokens: int, eos: int | None) -> TextFeed:
        _, tts_eos, tts_pad = self._markers()
        return TextFeed(steps, max_new_tokens=max_new_tokens, eos_token_id=eos,
                        embed=lambda step: self.talker.text_projection(step.embeds),
                        eos_marker=tts_eos[None], pad_marker=tts_pad[None])

    def prompt_states(self, ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The Talker's reading of prompt positions ``ids (B, T)`` -> ``(B, T, talker dim)``: ``hidden_projection``
        of the Thinker's hidden state ``hidden (B, T, D)`` (after ``accept_hidden_layer``) at media placeholders,
        ``text_projection`` of the token's Thinker embedding elsewhere."""
        t, tokens = self.talker, self.thinker.text_model.media_tokens
        media = torch.isin(ids, torch.tensor([tokens.audio, tokens.image, tokens.video], device=ids.device))
        embeds = self.thinker.text_model.embed(ids)
        return torch.where(media[..., None], t.hidden_projection(hidden), t.text_projection(embeds))

    def _user_part(self, run: SpeakRun) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The user turns' Talker inputs ``(B, U, dim)``, ids ``(B, U)`` and mask ``(B, U)`` (right-aligned)."""
        ids, mask = run.input_ids, run.attention_mask
        batch, length = ids.shape
        states = self.prompt_states(ids, run.prompt_hidden)
        positions = torch.arange(length, device=ids.device).expand(batch, length)
        starts = torch.where(ids == self.ids.im_start, positions, -1).cummax(dim=-1).values.clamp_min(0)
        role = ids.gather(1, (starts + 1).clamp_max(length - 1))
        user = (role == self.ids.user) & mask
        counts = user.sum(-1)
        width = int(counts.max())
        order = torch.where(user, length + positions, positions).argsort(dim=-1)[:, length - width:]
        aligned = torch.arange(width, device=ids.device)[None] >= (width - counts)[:, None]
        return states.gather(1, order[..., None].expand(-1, -1, states.shape[-1])), ids.gather(1, order), aligned

    def _assistant_part(self, run: SpeakRun, speaker: int) -> torch.Tensor:
        """The 9 assistant positions ``(B, 9, dim)``: the prompt must end with ``<|im_start|>assistant`` and one
        token (the chat template's generation prompt)."""
        ids, t = run.input_ids, self.talker
        starts = ((ids[0, :-1] == self.ids.im_start) & (ids[0, 1:] == self.ids.assistant)).nonzero().flatten()
        if starts.numel() == 0 or int(starts[-1]) != ids.shape[1] - 3:
            raise OmnikitValueError(
                "`input_ids` must end with '<|im_start|>assistant' and one more token (the generation prompt)"
            )
        batch = ids.shape[0]
        head = t.text_projection(self.thinker.text_model.embed(ids[:, -3:]))
        bos, _, pad = self._markers()
        first = t.text_projection(run.feed.first.embeds)[:, None]
        text = torch.cat((head, pad.expand(batch, 4, -1), bos.expand(batch, 1, -1), first), dim=1)
        i = self.ids
        codec = torch.tensor([i.codec_nothink, i.codec_think_bos, i.codec_think_eos, speaker, i.codec_pad, i.codec_bos],
                             device=ids.device)
        codec = torch.cat((torch.zeros_like(head), t.codec_embedding(codec).expand(batch, -1, -1)), dim=1)
        return text + codec

    def _talker_step(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Talker step inside its stream: ``x (B, 1, dim)`` -> code-0 logits ``(B, V)``, hidden ``(B, dim)``."""
        hidden = self.talker.decoder(x, positions=positions, key_padding_mask=mask)[:, -1]
        return self.talker.codec_head(hidden), hidden

    def _talker_frames(self, run: SpeakRun) -> Iterator[torch.Tensor]:
        t, eos = self.talker, run.eos_ids[0]
        user, user_ids, user_mask = self._user_part(run)
        assistant = self._assistant_part(run, self.ids.speakers[run.speaker.lower()])
        batch = user.shape[0]
        prompt = torch.cat((user, assistant), dim=1)
        ids = torch.cat((user_ids, torch.full_like(user_ids[:, :1], self.ids.tts_pad).expand(-1, 9)), dim=1)
        mask = torch.cat((user_mask, torch.ones_like(user_mask[:, :1]).expand(-1, 9)), dim=1)
        positions, next_position = run.talker_positions(self.thinker, ids, mask)
        vocab = t.config.vocab_size
        banned = [i for i in range(max(0, vocab - 1024), vocab) if i != eos]
        predictor = GREEDY if run.talker_sampling.temperature == 0 else PREDICTOR_SAMPLING
        max_len = check_cache_settings(run.cache, None, run.compile, needed=prompt.shape[1] + run.max_frames)
        step = self._talker_step if run.compile is False else compiled_step(self._talker_step, run.compile)
        masks = DecodeMask(mask, max_len)
        with streaming(t.decoder, batch, max_len=max_len):
            hidden = t.decoder(prompt, positions=positions, key_padding_mask=mask)[:, -1]
            logits = t.codec_head(hidden)
            done, previous = torch.zeros_like(mask[:, 0]), []
            for f in range(run.max_frames):
                first = pick_codes(logits, run.talker_sampling, banned=banned, generator=run.generator,
                                   previous=torch.stack(previous, dim=1) if previous else None)
                first = torch.where(done, eos, first)
                previous.append(first)
                done = done | (first == eos)
                if bool(done.all()):
                    return
                frame = t.sample_residual(hidden, first, predictor, generator=run.generator, cache=run.cache,
                                          compile=run.compile)
                run.frames_made.append(~done)
                yield frame.masked_fill(done[:, None], 0)
                x = t.embed_frames(frame[..., None]) + run.feed.entry(f)[:, None]
                pos = (next_position + f).view(1, batch, 1).expand(3, batch, 1)
                logits, hidden = step(x, pos, masks.step())

    def _decode(self, codes: torch.Tensor, lengths: torch.Tensor, speaker: str) -> torch.Tensor:
        """transformers' offline decoding: ``chunked_decode`` in chunks of 300 frames with 25 frames of context."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0, device=codes.device)
        return self.vocoder.chunked_decode(codes, 300, 25)

    def _stream_decoder(self, speaker: str, batch: int, **options: Any
                        ) -> AbstractContextManager[Callable[[torch.Tensor], torch.Tensor]]:
        return code2wav_stream(self.vocoder, batch, **options)
