"""Samples of mixed media -> one model-ready batch, with the model's own frontends.

::

    model = omnikit.create_model("omni_early_tiny")
    processor = OmniProcessor(model, num_frames=4, size=(16, 16), max_media_tokens=96)
    batch = processor([{"text": "<video> what moves? <audio> and here?", "videos": [frames], "audios": [wav]}])
    logits = model(**batch.model_inputs())

Per sample: the text is tokenized, each ``<audio>`` / ``<video>`` / ``<image>`` marker becomes a
run of placeholders exactly as long as the encoder's output for that item (early fusion:
``model.audio.encoder.output_lengths`` of its log-mel frames, ``t * h * w`` of ``model.video.grid``)
or one marker token per item (cross-attention fusion). Audio goes through the model's log-mel
frontend (:class:`omnikit.audio.features.LogMelSpectrogram`) item by item, so an item's features
never depend on the rest of the batch.

``max_media_tokens`` is one budget per sample across modalities: video frames are dropped first
(``frames_per_step`` at a time, never below one step), then every audio item is cut by the same
share; a sample that still does not fit raises. All videos of a batch share one frame count (the
model takes one ``frames (N, F, C, H, W)`` tensor): the smallest any sample's budget allows.
An image is a still video (repeated to that frame count). ``use_audio_in_video`` adds the
video's soundtrack as an audio item right after the video (sequential, not TMRoPE-interleaved).

``max_length`` bounds each sample's whole sequence (text, markers and placeholder runs: the
model's context). A sample that does not fit raises :class:`SampleTooLongError` (a ValueError
naming the sample and its text, audio and visual counts) under ``overflow="raise"``; under
``overflow="fewer_frames"`` the batch's video frame count is lowered (``frames_per_step`` at a
time; the processor's analogue of :meth:`omnikit.budget.TokenCounter.fit_video_fps`) to the
largest that fits every sample, and a sample that does not fit even at one step raises. Text and
audio are never cut by ``max_length`` (only ``max_media_tokens`` trims audio, as documented above).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from omnikit.audio.features import LogMelSpectrogram
from omnikit.data.samples import MARKERS, LoadedSample, Sample, load_sample
from omnikit.data.tokenizer import as_tokenizer
from omnikit.fusion import CrossAttentionOmni, PackedSequences, VisualGrid, pack_sequences, tmrope_position_ids
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive

__all__ = ["EncodedSample", "OmniBatch", "OmniProcessor", "SampleTooLongError"]

#: What a processor does with a sample longer than ``max_length``.
OVERFLOW_POLICIES = ("raise", "fewer_frames")


class SampleTooLongError(OmnikitValueError):
    """A sample needs more positions than the processor's ``max_length``; ``source`` names it."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(message)
        self.source = source

_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in MARKERS.values()) + ")")
_KIND_OF = {v: k for k, v in MARKERS.items()}


@dataclass
class EncodedSample:
    """One sample turned into model inputs.

    Attributes:
        input_ids: ``(T,)`` with placeholder runs.
        loss_mask: ``(T,)`` bool, True on the tokens a language-model loss learns.
        frames: ``(N_v, F, C, H, W)`` float, visual items in order (None: none).
        mels: per audio item ``(n_mels, L_i)``, in order.
        grids: ``(t, h, w)`` of each visual item.
        audio_tokens: encoder tokens of each audio item.
        codes: the Talker's target codes ``(K, F)`` (Thinker-Talker models), or None.
    """

    input_ids: torch.Tensor
    loss_mask: torch.Tensor
    frames: torch.Tensor | None
    mels: list[torch.Tensor] = field(default_factory=list)
    grids: list[tuple[int, int, int]] = field(default_factory=list)
    audio_tokens: list[int] = field(default_factory=list)
    codes: torch.Tensor | None = None

    def __len__(self) -> int:
        """Positions the sample takes in the sequence."""
        return len(self.input_ids)


@dataclass
class OmniBatch:
    """A padded batch (and the same samples packed into one row when asked).

    Attributes:
        input_ids: ``(B, T)`` right padded with ``pad_id``; ``lengths``: ``(B,)``.
        loss_mask: ``(B, T)`` bool (False on padding and media).
        frames: ``(N_v, F, C, H, W)`` or None; ``audio_features``: ``(N_a, n_mels, L)`` or None;
            ``audio_lengths``: ``(N_a,)`` valid mel frames.
        grids, audio_tokens: per media item across the batch, in order.
        packed: :class:`PackedSequences` with each sample's own TMRoPE ids (early fusion, ``pack=True``);
            run it with ``model.thinker(packed.input_ids, media=..., positions=packed.positions,
            cu_seqlens=packed.cu_seqlens)``.
        codes: Thinker-Talker models: ``(B, K, T * frames_per_token)`` target codes, zero padded;
            ``code_mask``: ``(B, F)`` bool, True on each sample's given frames.
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    loss_mask: torch.Tensor
    frames: torch.Tensor | None
    audio_features: torch.Tensor | None
    audio_lengths: torch.Tensor | None
    grids: list[tuple[int, int, int]]
    audio_tokens: list[int]
    packed: PackedSequences | None = None
    codes: torch.Tensor | None = None
    code_mask: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of the omni models' forward (media and codes left out when absent)."""
        inputs = {"input_ids": self.input_ids, "lengths": self.lengths, "frames": self.frames,
                  "audio_features": self.audio_features, "audio_lengths": self.audio_lengths, "codes": self.codes}
        return {k: v for k, v in inputs.items() if v is not None}


class OmniProcessor:
    """Turns :class:`~omnikit.data.Sample` s into an :class:`OmniBatch` for ``model``.

    Args:
        model: ``omni_early_tiny`` / ``omni_xattn_tiny`` / ``thinker_talker_tiny`` or any
            :class:`~omnikit.fusion.EarlyFusionOmni` / :class:`~omnikit.fusion.CrossAttentionOmni`
            (a ThinkerTalker's ``omni`` is used).
        tokenizer: ``None`` (bytes), a callable ``text -> ids`` or a Hugging Face tokenizer.
        num_frames: frames decoded per video (a multiple of the encoder's frames per step).
        size: ``(H, W)`` every frame and image is resized to.
        sample_rate: audio rate (the log-mel frontend's, 16 kHz).
        max_media_tokens: per-sample budget of media tokens (None: no limit).
        max_length: per-sample bound of the whole sequence, e.g. the model's context (None: no limit).
        overflow: ``"raise"`` or ``"fewer_frames"``: what a sample longer than ``max_length`` gets
            (see the module doc).
        markers: optional ``{"vision_start", "vision_end", "audio_start", "audio_end"}`` ids wrapped
            around every placeholder run (e.g. ``omnikit.fusion.models.TINY_MARKERS``).
        pad_id: padding id.

    A model of a layout a subclass ``handles`` (its class attribute: an :class:`OmniThinker` for
    :class:`~omnikit.data.thinker_processor.ThinkerProcessor`) gets an instance of that subclass.
    """

    #: The model type a subclass processes (``OmniProcessor(model)`` picks the subclass).
    handles: type | None = None

    def __new__(cls, model: nn.Module | None = None, *args: Any, **kwargs: Any) -> OmniProcessor:
        if cls is OmniProcessor and model is not None:  # (None: unpickling, in a DataLoader worker)
            cls = next((sub for sub in cls.__subclasses__() if sub.handles and isinstance(model, sub.handles)), cls)
        return super().__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        *,
        num_frames: int = 4,
        size: tuple[int, int] = (16, 16),
        sample_rate: int = 16000,
        max_media_tokens: int | None = None,
        max_length: int | None = None,
        overflow: str = "raise",
        markers: Mapping[str, int] | None = None,
        pad_id: int = 0,
    ) -> None:
        self._set_length_policy(max_length, overflow)
        omni = getattr(model, "omni", model)
        self.expand = not isinstance(omni, CrossAttentionOmni)
        if self.expand and getattr(omni, "audio_in_video", False):
            raise OmnikitValueError("the processor builds audio and video as separate items: build the model "
                                    "with audio_in_video=False (use_audio_in_video is chosen per sample)")
        lm = omni.thinker if self.expand else omni.lm
        self.media_tokens = lm.media_tokens if self.expand else omni.markers.media_tokens
        self.vocab_size = lm.config.vocab_size
        self.scheme = getattr(omni, "scheme", None)
        self.video, self.audio = omni.video, omni.audio
        check_positive(num_frames, "num_frames")
        self.step_frames = self.video.frames_per_step if self.video is not None else 1
        if num_frames % self.step_frames:
            raise OmnikitValueError(f"`num_frames` expected a multiple of {self.step_frames} (frames per video "
                                    f"token step) but got {num_frames}")
        self.num_frames, self.size, self.sample_rate = num_frames, tuple(size), sample_rate
        self.max_media_tokens, self.markers, self.pad_id = max_media_tokens, dict(markers or {}), pad_id
        self.frames_per_token = getattr(model, "frames_per_token", None) if hasattr(model, "talker") else None
        self.tokenize = as_tokenizer(tokenizer)
        self.mel = LogMelSpectrogram(self.audio.encoder.config.n_mels) if self.audio is not None else None

    def _set_length_policy(self, max_length: int | None, overflow: str) -> None:
        if max_length is not None:
            check_positive(max_length, "max_length")
        check_choice(overflow, "overflow", OVERFLOW_POLICIES)
        self.max_length, self.overflow = max_length, overflow

    # ----- per sample -------------------------------------------------------------------------
    def load(self, sample: Sample | Mapping[str, Any], source: str = "<sample>") -> LoadedSample:
        """Decode the sample's files (see :func:`~omnikit.data.load_sample`)."""
        return load_sample(sample, sample_rate=self.sample_rate, num_frames=self.num_frames, size=self.size,
                           source=source)

    def grid(self, frames: int) -> tuple[int, int, int]:
        """``(t, h, w)`` tokens of one visual item of ``frames`` frames (the model's ``video.grid``)."""
        return self.video.grid((1, frames, 3, *self.size))

    def audio_tokens(self, samples: int) -> int:
        """Encoder tokens of ``samples`` waveform samples (log-mel frames -> ``output_lengths``)."""
        frames = torch.tensor([samples // self.mel.hop_length])
        return int(self.audio.encoder.output_lengths(frames)[0])

    def visual_tokens(self, loaded: LoadedSample, frames: int) -> int:
        """Tokens of the sample's videos and images at ``frames`` frames per video (an image is a still video)."""
        return (len(loaded.videos) + len(loaded.images)) * int(np.prod(self.grid(frames)))

    def plan(self, loaded: LoadedSample) -> tuple[int, list[int]]:
        """``(frames per video, samples kept per audio item)`` within ``max_media_tokens``."""
        audios = self._audio_items(loaded)
        keep = [len(a) for a in audios]
        visual = len(loaded.videos) + len(loaded.images)
        frames = self.num_frames
        budget = self.max_media_tokens
        if budget is None:
            return frames, keep

        def visual_tokens(f: int) -> int:
            return self.visual_tokens(loaded, f) if visual else 0

        audio_total = sum(self.audio_tokens(n) for n in keep)
        while frames > self.step_frames and visual_tokens(frames) + audio_total > budget:
            frames -= self.step_frames
        left = budget - visual_tokens(frames)
        if audio_total > left:
            keep = self._trim_audio(keep, left, loaded.source)
        if visual_tokens(frames) + sum(self.audio_tokens(n) for n in keep) > budget:
            raise OmnikitValueError(
                f"`max_media_tokens`={budget} cannot hold sample {loaded.source}: {visual} visual item(s) need "
                f"{visual_tokens(frames)} tokens at {frames} frames; raise the budget"
            )
        return frames, keep

    def _trim_audio(self, keep: list[int], left: int, source: str) -> list[int]:
        """Cut every audio item to the same share of its samples so that their tokens fit ``left``."""
        low, high = 0.0, 1.0
        for _ in range(30):  # bisection on the kept share
            mid = (low + high) / 2
            if sum(self.audio_tokens(int(n * mid)) for n in keep) <= left:
                low = mid
            else:
                high = mid
        trimmed = [int(n * low) for n in keep]
        if any(self.audio_tokens(n) < 1 for n in trimmed):
            raise OmnikitValueError(f"`max_media_tokens`={self.max_media_tokens} leaves {left} audio tokens for "
                                    f"sample {source}: too few for every audio item to keep one token")
        return trimmed

    def _audio_items(self, loaded: LoadedSample) -> list[torch.Tensor]:
        """Audio waveforms in sequence order: ``<audio>`` items and video soundtracks, as the text orders them."""
        audios, videos = iter(loaded.audios), iter(loaded.soundtracks)
        items = []
        for _, content in loaded.turns:
            for piece in _MARKER_RE.split(content):
                if piece == MARKERS["audio"]:
                    items.append(next(audios, None))
                elif piece == MARKERS["video"]:
                    track = next(videos, None)
                    if track is not None:
                        items.append(track)
        return [a for a in items if a is not None]

    def encode(self, loaded: LoadedSample, frames: int | None = None, audio_samples: list[int] | None = None
               ) -> EncodedSample:
        """Token ids, loss mask, frames and log-mels of one sample; ``frames`` / ``audio_samples`` as
        :meth:`plan` gives them (default: the plan of this sample alone)."""
        if frames is None or audio_samples is None:
            frames, audio_samples = self.plan(loaded)
        self._check_counts(loaded)
        audios = [a[:n] for a, n in zip(self._audio_items(loaded), audio_samples)]
        videos, images = iter(zip(loaded.videos, loaded.soundtracks)), iter(loaded.images)
        audio_iter = iter(audios)
        ids: list[int] = []
        mask: list[bool] = []
        visual: list[torch.Tensor] = []
        out = EncodedSample(torch.empty(0), torch.empty(0), None)

        def add(tokens: list[int], learn: bool) -> None:
            ids.extend(tokens)
            mask.extend([learn] * len(tokens))

        def add_audio() -> None:
            mel, n = self.mel(next(audio_iter)[None, None], sample_rate=self.sample_rate)
            mel = mel[0, :, : int(n[0])]
            count = self.audio_tokens(mel.shape[-1] * self.mel.hop_length)
            out.mels.append(mel)
            out.audio_tokens.append(count)
            add(self._run("audio", count), False)

        def add_visual(item: torch.Tensor) -> None:
            visual.append(item)
            grid = self.grid(frames)
            out.grids.append(grid)
            add(self._run("video", int(np.prod(grid))), False)

        for role, content in loaded.turns:
            learn = role in ("", "assistant")
            if role:
                add(self._text(f"{role}: ", loaded.source), False)
            for piece in _MARKER_RE.split(content):
                kind = _KIND_OF.get(piece)
                if kind == "audio":
                    add_audio()
                elif kind == "video":
                    video, soundtrack = next(videos)
                    add_visual(video[_subsample(len(video), frames)])
                    if soundtrack is not None:
                        add_audio()
                elif kind == "image":
                    add_visual(next(images)[None].expand(frames, -1, -1, -1))
                elif piece:
                    add(self._text(piece, loaded.source), learn)
            if role:
                add(self._text("\n", loaded.source), learn)
        out.input_ids = torch.tensor(ids, dtype=torch.long)
        out.loss_mask = torch.tensor(mask, dtype=torch.bool)
        out.frames = torch.stack(visual) if visual else None
        out.codes = self._check_codes(loaded, len(ids))
        return out

    def _check_codes(self, loaded: LoadedSample, tokens: int) -> torch.Tensor | None:
        """A Thinker-Talker sample's codes, at most ``frames_per_token`` frames per token (a sample without
        codes serves Thinker-only training: its batch has none, and the joint forward then refuses it)."""
        if self.frames_per_token is None or loaded.codes is None:
            return loaded.codes
        frames = tokens * self.frames_per_token
        if loaded.codes.shape[1] > frames:
            got = f"{loaded.codes.shape[1]} frames"
            raise OmnikitValueError(
                f"sample {loaded.source}: a Thinker-Talker model expected `codes` (K, F) with F <= {frames} "
                f"({tokens} tokens x {self.frames_per_token} frames) but got {got}; make them with the model's "
                "codec, e.g. model.codec.encode(wav)[0]")
        return loaded.codes

    def _run(self, modality: str, count: int) -> list[int]:
        """``count`` placeholders (one marker token for cross-attention fusion), wrapped in markers."""
        token = getattr(self.media_tokens, modality)
        run = [token] * (count if self.expand else 1)
        prefix = "vision" if modality == "video" else "audio"
        start, end = self.markers.get(f"{prefix}_start"), self.markers.get(f"{prefix}_end")
        return ([start] if start is not None else []) + run + ([end] if end is not None else [])

    def _text(self, text: str, source: str) -> list[int]:
        ids = self.tokenize(text)
        reserved = set(self.media_tokens.as_dict().values())
        bad = sorted({i for i in ids if i in reserved or not 0 <= i < self.vocab_size})
        if bad:
            raise OmnikitValueError(f"sample {source}: the tokenizer gave ids {bad} for {text!r}; expected text ids in "
                                    f"[0, {self.vocab_size}) other than the placeholders {sorted(reserved)}")
        return ids

    def _check_counts(self, loaded: LoadedSample) -> None:
        text = "".join(content for _, content in loaded.turns)
        for kind, items in (("audio", loaded.audios), ("video", loaded.videos), ("image", loaded.images)):
            found = text.count(MARKERS[kind])
            if found != len(items):
                raise OmnikitValueError(f"sample {loaded.source}: {found} {MARKERS[kind]} marker(s) but "
                                        f"{len(items)} {kind} item(s)")
        if (loaded.videos or loaded.images) and self.video is None:
            raise OmnikitValueError(f"sample {loaded.source} has visual items but the model has no video adapter")
        if (loaded.audios or any(s is not None for s in loaded.soundtracks)) and self.audio is None:
            raise OmnikitValueError(f"sample {loaded.source} has audio but the model has no audio adapter")

    # ----- batches ----------------------------------------------------------------------------
    def __call__(self, samples: Sequence[Sample | Mapping[str, Any]], *, pack: bool = False) -> OmniBatch:
        """Load, plan, encode and collate ``samples`` (files decoded here; see :class:`MediaDataset`
        to decode in ``DataLoader`` workers)."""
        return self.collate([self.load(s, source=f"#{i}") for i, s in enumerate(samples)], pack=pack)

    def collate(self, loaded: Sequence[LoadedSample], *, pack: bool = False) -> OmniBatch:
        """One batch of decoded samples: one frame count for all (the smallest plan), padded ids and mels."""
        if not loaded:
            raise OmnikitValueError("`samples` expected at least one sample but got none")
        plans = [self.plan(s) for s in loaded]
        frames = min(f for f, _ in plans)
        encoded = [self.encode(s, frames, keep) for s, (_, keep) in zip(loaded, plans)]
        if self.max_length is not None:
            fitted = min(self._fit_frames(s, e, frames, keep) for s, e, (_, keep) in zip(loaded, encoded, plans))
            if fitted < frames:
                frames = fitted
                encoded = [self.encode(s, frames, keep) if s.videos or s.images else e
                           for s, e, (_, keep) in zip(loaded, encoded, plans)]
            for s, e, (_, keep) in zip(loaded, encoded, plans):
                if len(e) > self.max_length:
                    raise self._too_long(s, len(e), frames, keep, "")
        return self.batch(encoded, pack=pack)

    def _fit_frames(self, loaded: LoadedSample, encoded: Any, frames: int, keep: list[int]) -> int:
        """The largest frame count (at most ``frames``) at which ``loaded`` fits ``max_length``
        (``frames`` when it fits already); raises :class:`SampleTooLongError` when none does or the
        policy is ``"raise"``."""
        length = len(encoded)
        if length <= self.max_length:
            return frames
        if self.overflow == "raise":
            raise self._too_long(loaded, length, frames, keep, "; pass overflow='fewer_frames' to lower the video "
                                 "frame count, or raise max_length")
        rest = length - self.visual_tokens(loaded, frames)
        fitted = frames
        while fitted > self.step_frames and rest + self.visual_tokens(loaded, fitted) > self.max_length:
            fitted -= self.step_frames
        if not self.expand or rest + self.visual_tokens(loaded, fitted) > self.max_length:
            raise self._too_long(loaded, length, frames, keep, f"; it does not fit even at {fitted} frame(s) per "
                                 "video, and text and audio are never cut")
        return fitted

    def _too_long(self, loaded: LoadedSample, length: int, frames: int, keep: list[int], hint: str
                  ) -> SampleTooLongError:
        """The error naming ``loaded`` and its counts at ``frames`` frames per video."""
        if self.expand:
            visual, audio = self.visual_tokens(loaded, frames), sum(self.audio_tokens(n) for n in keep)
            parts = (f"text and markers {length - visual - audio}, audio {audio} ({len(keep)} item(s)), visual "
                     f"{visual} ({len(loaded.videos)} video(s) at {frames} frames, {len(loaded.images)} image(s))")
        else:
            parts = "text and one marker per media item"
        return SampleTooLongError(loaded.source, f"sample {loaded.source} needs {length} positions but `max_length` "
                                  f"is {self.max_length}: {parts}{hint}")

    def batch(self, encoded: Sequence[EncodedSample], *, pack: bool = False) -> OmniBatch:
        """Pad (and optionally pack) encoded samples into an :class:`OmniBatch`."""
        ids = [e.input_ids for e in encoded]
        lengths = torch.tensor([len(i) for i in ids])
        frames = [e.frames for e in encoded if e.frames is not None]
        if len({f.shape[1:] for f in frames}) > 1:
            raise OmnikitValueError("encoded samples expected one frame shape but got "
                                    f"{sorted({tuple(f.shape[1:]) for f in frames})}; encode them with one plan")
        mels = [m for e in encoded for m in e.mels]
        features = audio_lengths = None
        if mels:
            audio_lengths = torch.tensor([m.shape[-1] for m in mels])
            features = pad_sequence([m.T for m in mels], batch_first=True).transpose(1, 2).contiguous()
        batch = OmniBatch(
            input_ids=pad_sequence(ids, batch_first=True, padding_value=self.pad_id),
            lengths=lengths,
            loss_mask=pad_sequence([e.loss_mask for e in encoded], batch_first=True, padding_value=False),
            frames=torch.cat(frames) if frames else None,
            audio_features=features,
            audio_lengths=audio_lengths,
            grids=[g for e in encoded for g in e.grids],
            audio_tokens=[n for e in encoded for n in e.audio_tokens],
        )
        with_codes = [e.codes is not None for e in encoded]
        if any(with_codes) and not all(with_codes):
            raise OmnikitValueError(
                f"`samples` expected codes on every sample of a batch or on none, but samples "
                f"{[i for i, c in enumerate(with_codes) if not c]} have none")
        if self.frames_per_token is not None and all(with_codes):
            frames = batch.input_ids.shape[1] * self.frames_per_token
            batch.codes = torch.zeros(len(encoded), encoded[0].codes.shape[0], frames, dtype=torch.long)
            batch.code_mask = torch.zeros(len(encoded), frames, dtype=torch.bool)
            for b, e in enumerate(encoded):
                batch.codes[b, :, : e.codes.shape[1]] = e.codes
                batch.code_mask[b, : e.codes.shape[1]] = True
        if pack:
            batch.packed = pack_sequences(ids, [self.positions(e) for e in encoded])
        return batch

    def positions(self, encoded: EncodedSample) -> torch.Tensor:
        """``(3, T)`` TMRoPE ids of one sample alone (early fusion)."""
        if not self.expand:
            raise OmnikitValueError("`pack=True` needs an early-fusion model (TMRoPE ids per sample)")
        step = self.step_frames / self.video.fps if self.video is not None else 1.0
        grids = [VisualGrid(t, h, w, step) for t, h, w in encoded.grids]
        positions, _ = tmrope_position_ids(encoded.input_ids[None], self.media_tokens, videos=grids,
                                           audios=encoded.audio_tokens, scheme=self.scheme)
        return positions[:, 0]


def _subsample(available: int, frames: int) -> torch.Tensor:
    """``frames`` indices spread uniformly over ``available`` frames."""
    return torch.from_numpy(np.linspace(0, available - 1, frames).round().astype(np.int64))
