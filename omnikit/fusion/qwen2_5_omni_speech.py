"""Qwen2.5-Omni speaking: the Thinker, the Talker (codec ids in the Thinker's embedding space) and a
pluggable code-to-waveform model (the published token2wav: DiT + BigVGAN).

The Talker's prompt is transformers' ``Qwen2_5OmniForConditionalGeneration.generate`` layout: for every
prompt position the Thinker's final hidden state plus its token embedding (zero at media placeholders),
then the speaker's text bos embedding and reply token 0 (hidden state + embedding); the codec embeddings
of ``codec_pad`` and ``codec_bos`` are added to the last two. Step ``s`` reads the previous codec id's
embedding plus reply token ``s + 1`` (``tts_text_end``'s embedding for the last one, ``tts_text_pad``'s
after). The Talker never picks ``codec_bos`` and stops at ``codec_pad`` or ``codec_end`` (transformers'
hard-coded ``[8292, 8294]``).

The vocoder is any module called as ``vocoder(codes (1, F), conditioning=(1, C), reference_mel=(1, T, M))``
returning the waveform (transformers' ``Qwen2_5OmniToken2WavModel`` signature), with the speaker's ``cond``
and ``ref_mel`` from the snapshot's ``spk_dict.pt``. Without one, ``return_audio=True`` raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.audio.speakers import load_speakers
from omnikit.audio.token2wav import Token2Wav, Token2WavStream
from omnikit.fusion.omni_speech import DecodeMask, SpeakingOmni, SpeakRun, TextFeed, pick_codes
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.models.decode_cache import check_cache_settings, compiled_step
from omnikit.models.generation import GenerationStep
from omnikit.speech.omni_talker import OmniTalker
from omnikit.streaming import streaming
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["Qwen2_5OmniSpeech", "Qwen2_5SpeechIds", "read_speakers"]


class _ChunkedToken2Wav:
    """A speech stream's decoder over a :class:`~omnikit.audio.Token2WavStream`: ``(1, 1, f)`` new codes ->
    ``(1, 1, s)`` waveform that is final; :meth:`finish` gives the rest at the end of speech."""

    def __init__(self, stream: Token2WavStream) -> None:
        self.stream = stream

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        return self.stream.push(codes[:, 0])[:, None]

    def finish(self) -> torch.Tensor:
        return self.stream.finish()[:, None]


@dataclass(frozen=True)
class Qwen2_5SpeechIds:
    """Text and codec ids of the speech loop (``Qwen2_5OmniTalkerConfig``)."""

    text_eos: int = 151861
    text_pad: int = 151859
    codec_bos: int = 8293
    codec_end: int = 8294
    codec_pad: int = 8292
    codec_mask: int = 8296

    @classmethod
    def from_config(cls, talker: Mapping[str, Any]) -> Qwen2_5SpeechIds:
        """From a ``talker_config`` dict (transformers' defaults for absent keys)."""
        names = {"text_eos": "tts_text_end_token_id", "text_pad": "tts_text_pad_token_id",
                 "codec_bos": "tts_codec_start_token_id", "codec_end": "tts_codec_end_token_id",
                 "codec_pad": "tts_codec_pad_token_id", "codec_mask": "tts_codec_mask_token_id"}
        d = cls()
        return cls(**{k: int(talker.get(v, getattr(d, k))) for k, v in names.items()})


def read_speakers(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{name: {"bos_token", "cond", "ref_mel", ...}}`` of a published ``spk_dict.pt`` (or the safetensors copy
    :func:`~omnikit.audio.convert_speakers` writes), read by :func:`~omnikit.audio.load_speakers` (no pickled
    code runs); every voice needs the Talker's ``bos_token``."""
    table = {}
    for name, voice in load_speakers(path).items():
        if "bos_token" not in voice.extras:
            raise OmnikitValueError(f"{str(path)!r}: speaker {name!r} lacks 'bos_token' (the Talker's start token)")
        table[name] = {**voice.extras, "cond": voice.conditioning, "ref_mel": voice.reference_mel,
                       "bos_token": int(voice.extras["bos_token"])}
    return table


class Qwen2_5OmniSpeech(SpeakingOmni):
    """Qwen2.5-Omni's Thinker, Talker and (optional) token2wav ``vocoder``, speaking; see the module docstring.

    ``speakers``: ``{name: {"bos_token": int, "cond": tensor, "ref_mel": tensor}}`` (``load_hf`` reads the
    snapshot's ``spk_dict.pt``; :meth:`load_speakers` reads another). Without a vocoder, ``generate`` gives
    text only (``return_audio=False``) and ``stream(..., return_audio=False)`` text and codes.
    """

    default_speaker = "Chelsie"
    talker_defaults: ClassVar[Mapping[str, Any]] = {
        "max_new_tokens": 4096, "do_sample": True, "top_k": 40, "top_p": 0.8, "temperature": 0.9,
        "repetition_penalty": 1.05,
    }

    def __init__(self, thinker: OmniThinker, talker: OmniTalker, vocoder: nn.Module | None, ids: Qwen2_5SpeechIds,
                 speakers: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if not isinstance(talker, OmniTalker):
            raise OmnikitTypeError(f"`talker` expected an OmniTalker but got {type(talker).__name__}")
        super().__init__(thinker, talker, vocoder)
        self.ids = ids
        self.speakers: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (speakers or {}).items()}
        eos = 151645 if thinker.text_model.config.vocab_size > 151645 else None  # <|im_end|> when it exists
        self.thinker_defaults = {"do_sample": False, "max_new_tokens": 1024, "eos_token_id": eos}

    def load_speakers(self, path: str | Path) -> None:
        """Add the speakers of a ``spk_dict.pt`` (see :func:`read_speakers`)."""
        self.speakers.update(read_speakers(path))

    @property
    def sample_rate(self) -> int:
        return 24000

    @contextmanager
    def _stream_decoder(self, speaker: str, batch: int, **options: Any) -> Iterator[_ChunkedToken2Wav | None]:
        """``decoder_options={"chunked": True, ...}``: the token2wav vocoder decodes chunk by chunk
        (:class:`~omnikit.audio.Token2WavStream`'s options: ``chunk``, ``past``, ``future``, ``noise``, ``steps``;
        close to, not equal to, the offline waveform by design); otherwise all codes at the end."""
        if not options.pop("chunked", False):
            yield None
            return
        if batch != 1 or not isinstance(self.vocoder, Token2Wav):
            raise OmnikitValueError(f"`decoder_options` chunked=True needs the token2wav vocoder and a batch of 1 but "
                                    f"got {type(self.vocoder).__name__} and a batch of {batch}")
        table, weight = self.speakers[speaker], next(self.vocoder.parameters())
        yield _ChunkedToken2Wav(Token2WavStream(
            self.vocoder, conditioning=table["cond"].to(weight.device, weight.dtype),
            reference_mel=table["ref_mel"].to(weight.device, weight.dtype), **options))

    @property
    def num_codebooks(self) -> int:
        return 1

    def _prompt_layer(self) -> nn.Module:
        return self.thinker.text_model.decoder.norm

    def _check_speaker(self, speaker: str, vocoder_needed: bool) -> None:
        if speaker not in self.speakers:
            raise OmnikitValueError(f"`speaker` {speaker!r} is not one of {sorted(self.speakers)} (spk_dict.pt)")
        if vocoder_needed and self.vocoder is None:
            raise OmnikitValueError(
                "return_audio=True needs Qwen2.5-Omni's token2wav (DiT + BigVGAN), which is not available here; "
                "generate(return_audio=False) gives the text and stream(return_audio=False) the Talker's codes"
            )

    def _talker_eos(self, options: Mapping[str, Any]) -> tuple[int, ...]:
        eos = options.get("eos_token_id", (self.ids.codec_pad, self.ids.codec_end))
        return tuple(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.thinker.text_model.embed(ids)

    def _feed(self, steps: Iterator[GenerationStep], max_new_tokens: int, eos: int | None) -> TextFeed:
        device = next(self.parameters()).device
        eos_marker, pad_marker = self._embed(torch.tensor([self.ids.text_eos, self.ids.text_pad], device=device))
        return TextFeed(steps, max_new_tokens=max_new_tokens, eos_token_id=eos,
                        embed=lambda step: step.hidden + step.embeds, eos_marker=eos_marker[None],
                        pad_marker=pad_marker[None])

    def _prompt(self, run: SpeakRun) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Talker's prompt ``(B, T + 2, E)``, its text ids ``(B, T + 2)`` (for TMRoPE) and mask."""
        ids, t = run.input_ids, self.talker
        tokens = self.thinker.text_model.media_tokens
        media = torch.isin(ids, torch.tensor([tokens.audio, tokens.image, tokens.video], device=ids.device))
        embeds = self._embed(ids).masked_fill(media[..., None], 0.0)
        bos = torch.full_like(ids[:, :1], self.speakers[run.speaker]["bos_token"])
        first = run.feed.first
        prompt = torch.cat((run.prompt_hidden + embeds, self._embed(bos), (first.hidden + first.embeds)[:, None]),
                           dim=1)
        codec = torch.tensor([self.ids.codec_pad, self.ids.codec_bos], device=ids.device)
        prompt = torch.cat((prompt[:, :-2], prompt[:, -2:] + t.embed(codec).to(prompt.dtype)), dim=1)
        text_ids = torch.cat((ids, bos, first.tokens[:, None]), dim=1)
        mask = torch.cat((run.attention_mask, torch.ones_like(run.attention_mask[:, :2])), dim=1)
        return prompt, text_ids, mask

    def _talker_step(self, x: torch.Tensor, codes: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
                     ) -> torch.Tensor:
        """One Talker step inside its stream: reply entry ``x (B, 1, E)`` and the previous ``codes (B, 1)`` ->
        logits ``(B, V)``."""
        return self.talker(x, codes, positions=positions, key_padding_mask=mask)[:, -1]

    def _talker_frames(self, run: SpeakRun) -> Iterator[torch.Tensor]:
        t, i = self.talker, self.ids
        prompt, text_ids, mask = self._prompt(run)
        batch, length = text_ids.shape
        positions, next_position = run.talker_positions(self.thinker, text_ids, mask)
        codec_prompt = torch.full_like(text_ids, i.codec_mask)
        codec_prompt[:, -2:] = torch.tensor([i.codec_pad, i.codec_bos], device=text_ids.device)
        eos = torch.tensor(run.eos_ids, device=text_ids.device)
        max_len = check_cache_settings(run.cache, None, run.compile, needed=length + run.max_frames)
        step = self._talker_step if run.compile is False else compiled_step(self._talker_step, run.compile)
        masks = DecodeMask(mask, max_len)
        with streaming(t, batch, max_len=max_len):
            logits = t(prompt, positions=positions, key_padding_mask=mask)[:, -1]
            done, generated = torch.zeros_like(mask[:, 0]), [codec_prompt]
            for f in range(run.max_frames):
                code = pick_codes(logits, run.talker_sampling, banned=[i.codec_bos], generator=run.generator,
                                  previous=torch.cat(generated, dim=1))
                code = torch.where(done, i.codec_pad, code)
                generated.append(code[:, None])
                done = done | torch.isin(code, eos)
                if bool(done.all()):
                    return
                run.frames_made.append(~done)
                yield code.masked_fill(done, 0)[:, None]
                pos = (next_position + f).view(1, batch, 1).expand(3, batch, 1)
                logits = step(run.feed.entry(f)[:, None], code[:, None], pos, masks.step())

    def _decode(self, codes: torch.Tensor, lengths: torch.Tensor, speaker: str) -> torch.Tensor:
        """Each item alone through the vocoder (transformers decodes item by item too), zero-padded."""
        table = self.speakers[speaker]
        decode = getattr(self.vocoder, "token2wav", self.vocoder)  # omnikit's Token2Wav: its waveform method
        wavs = []
        for b, n in enumerate(lengths.tolist()):
            wav = decode(codes[b : b + 1, 0, :n], conditioning=table["cond"].float()[None].to(codes.device),
                               reference_mel=table["ref_mel"].float()[None].to(codes.device))
            wavs.append(wav.reshape(-1).float())
        out = torch.zeros(len(wavs), 1, max(w.shape[0] for w in wavs), device=codes.device)
        for b, wav in enumerate(wavs):
            out[b, 0, : wav.shape[0]] = wav
        return out
