"""Chat samples with files -> labelled batches for the published-layout Thinkers (Qwen2.5-Omni, Qwen3-Omni).

::

    thinker = omnikit.convert.load_hf("Qwen/Qwen3-Omni-30B-A3B-Instruct")     # a local snapshot
    processor = OmniProcessor(thinker, tokenizer, size=(224, 224), num_frames=4)  # a ThinkerProcessor
    batch = processor([{"messages": [{"role": "user", "content": "<image> what is this?"},
                                     {"role": "assistant", "content": "a cat"}], "images": ["cat.jpg"]}])
    logits = thinker(**batch.model_inputs())
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten())   # -100 ignored

Each sample is written in the chat layout of the Qwen-Omni templates (``<|im_start|>role\\n ...
<|im_end|>\\n`` per message, tokenized by ``tokenizer``), each ``<audio>`` / ``<image>`` / ``<video>``
marker replaced by the model's own placeholder run between its start/end marker ids
(:class:`~omnikit.fusion.omni_prompt.OmniPrompt`): as many audio placeholders as the audio tower
gives tokens for the clip's log-mels, ``t * h * w / merge**2`` image or video placeholders, a
video's soundtrack (``use_audio_in_video``) interleaved with its frames in TMRoPE's 2 s chunks.
The batch holds what the transformers processor returns (``input_ids``, ``attention_mask``,
``input_features``, ``feature_attention_mask``, ``pixel_values``, ``image_grid_thw``,
``pixel_values_videos``, ``video_grid_thw``, ``video_second_per_grid``), left or right padded,
and ``labels``: the ids of the assistant's messages (their ``<|im_end|>`` included; all text of a
sample given as plain ``text``), ``-100`` elsewhere. Budgets (``max_media_tokens``, ``max_length``) and
:class:`~omnikit.data.MediaFileError` work as in :class:`~omnikit.data.OmniProcessor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from omnikit.audio.features import LogMelSpectrogram
from omnikit.data.processor import _KIND_OF, _MARKER_RE, OmniProcessor, _subsample
from omnikit.data.samples import LoadedSample
from omnikit.data.tokenizer import as_tokenizer
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts, pad_rows
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive

__all__ = ["CLIP_MEAN", "CLIP_STD", "IGNORE_INDEX", "ThinkerBatch", "ThinkerProcessor", "ThinkerSample"]

#: The image normalisation of the Qwen2.5-Omni processor (OpenAI CLIP's); Qwen3-Omni's is 0.5 / 0.5.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The label of positions no loss learns (``torch.nn.functional.cross_entropy``'s default ignore index).
IGNORE_INDEX = -100


@dataclass
class ThinkerSample:
    """One sample in the Thinker's layout: its :class:`OmniPrompt` (ids and media) and per-id learn flags."""

    prompt: OmniPrompt
    learn: list[bool]

    def __len__(self) -> int:
        """Positions the sample takes in the sequence."""
        return len(self.prompt.ids)


@dataclass
class ThinkerBatch:
    """A padded batch for an :class:`OmniThinker`.

    Attributes:
        inputs: the processor-style keywords of the Thinker's forward (``input_ids`` ``(B, T)``,
            ``attention_mask``, media as the transformers processor packs them).
        labels: ``(B, T)`` the learned ids, ``-100`` elsewhere (padding, media, prompts).
        loss_mask: ``(B, T)`` bool, ``labels != -100``.
        lengths: ``(B,)`` valid ids per row.
    """

    inputs: dict[str, Any]
    labels: torch.Tensor
    loss_mask: torch.Tensor
    lengths: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments of the Thinker's forward."""
        return dict(self.inputs)


class ThinkerProcessor(OmniProcessor):
    """:class:`~omnikit.data.Sample` s -> :class:`ThinkerBatch` for an :class:`OmniThinker`
    (``OmniProcessor(thinker, ...)`` builds one).

    Args:
        model: the Thinker (``load_hf`` of a Qwen2.5-Omni / Qwen3-Omni snapshot, or a registered one).
        tokenizer: the model's tokenizer (a Hugging Face tokenizer knows the chat markers as special
            tokens), a callable ``text -> ids``, or ``None`` (bytes; the tiny models).
        num_frames: frames decoded per video (a multiple of the tower's temporal patch).
        size: ``(H, W)`` every frame and image is resized to (multiples of ``patch * merge_size``).
        sample_rate: audio rate of the log-mel frontend (16 kHz).
        max_media_tokens: per-sample budget of media tokens (None: no limit).
        max_length, overflow: the bound of each sample's whole sequence and what a longer sample
            gets, as in :class:`~omnikit.data.OmniProcessor`.
        padding_side: ``"left"`` (generation) or ``"right"``.
        pad_id: the padding id (the tokenizer's ``pad_token_id``).
        video_fps: the rate of the decoded frames, for ``video_second_per_grid`` (temporal patch / fps).
        image_mean, image_std: per-channel normalisation of pixels in [0, 1].
        chat: the text before and after each message's content (``{role}`` is filled in).
    """

    handles = OmniThinker

    def __init__(
        self,
        model: OmniThinker,
        tokenizer: Any = None,
        *,
        num_frames: int = 2,
        size: tuple[int, int] | None = None,
        sample_rate: int = 16000,
        max_media_tokens: int | None = None,
        max_length: int | None = None,
        overflow: str = "raise",
        padding_side: Literal["left", "right"] = "left",
        pad_id: int = 0,
        video_fps: float = 2.0,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        chat: tuple[str, str] = ("<|im_start|>{role}\n", "<|im_end|>\n"),
    ) -> None:
        if not isinstance(model, OmniThinker):
            raise OmnikitValueError(f"`model` expected an OmniThinker but got {type(model).__name__}")
        check_choice(padding_side, "padding_side", ("left", "right"))
        self._set_length_policy(max_length, overflow)
        check_positive(num_frames, "num_frames")
        if not video_fps > 0:
            raise OmnikitValueError(f"`video_fps` expected a positive rate but got {video_fps}")
        self.model, self.expand = model, True
        self.media_tokens = model.text_model.media_tokens
        self.vocab_size = model.text_model.config.vocab_size
        self.video, self.audio = model.vision_encoder, model.audio_encoder
        vision = self.video.config if self.video is not None else None
        self.step_frames = vision.patch[0] if vision is not None else 1
        self.unit = vision.patch[1] * vision.merge_size if vision is not None else 1
        size = tuple(size or (2 * self.unit, 2 * self.unit))
        if num_frames % self.step_frames or any(side % self.unit for side in size):
            raise OmnikitValueError(
                f"`num_frames` expected a multiple of {self.step_frames} and `size` multiples of {self.unit} "
                f"pixels (temporal patch, patch x merge) but got {num_frames} and {size}")
        self.num_frames, self.size, self.sample_rate = num_frames, size, sample_rate
        self.max_media_tokens, self.markers, self.pad_id = max_media_tokens, {}, pad_id
        self.padding_side, self.video_fps, self.chat = padding_side, float(video_fps), chat
        self.mean = torch.tensor(image_mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(image_std, dtype=torch.float32)[:, None, None]
        self.tokenize = as_tokenizer(tokenizer)
        self.mel = LogMelSpectrogram(self.audio.config.n_mels) if self.audio is not None else None

    def grid(self, frames: int) -> tuple[int, int, int]:
        """``(t, h, w)`` merged tokens of one visual item of ``frames`` frames at ``size``."""
        height, width = self.size
        return math.ceil(frames / self.step_frames), height // self.unit, width // self.unit

    def visual_tokens(self, loaded: LoadedSample, frames: int) -> int:
        """Tokens of the sample's videos at ``frames`` frames and of its images (one temporal step each)."""
        return len(loaded.videos) * math.prod(self.grid(frames)) + len(loaded.images) * math.prod(self.grid(1))

    def audio_tokens(self, samples: int) -> int:
        return int(self.audio.output_lengths(torch.tensor([samples // self.mel.hop_length]))[0])

    def _mel(self, wave: torch.Tensor) -> torch.Tensor:
        mel, n = self.mel(wave[None, None], sample_rate=self.sample_rate)
        return mel[0, :, : int(n[0])]

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames - self.mean) / self.std

    def encode(self, loaded: LoadedSample, frames: int | None = None, audio_samples: list[int] | None = None
               ) -> ThinkerSample:
        """One sample's ids (chat layout, placeholder runs), media and learn flags; ``frames`` /
        ``audio_samples`` as :meth:`plan` gives them (default: this sample's own plan)."""
        if frames is None or audio_samples is None:
            frames, audio_samples = self.plan(loaded)
        self._check_counts(loaded)
        audios = iter([a[:n] for a, n in zip(self._audio_items(loaded), audio_samples)])
        videos, images = iter(zip(loaded.videos, loaded.soundtracks)), iter(loaded.images)
        prompt, learn = OmniPrompt(self.model), []
        height, width = self.size

        def add(text: str, learned: bool) -> None:
            ids = self._text(text, loaded.source)
            prompt.tokens(ids)
            learn.extend([learned] * len(ids))

        def media(kind: str) -> None:
            before = len(prompt.ids)
            if kind == "audio":
                mel = self._mel(next(audios))
                prompt.audio(mel.shape[-1], mel=mel)
            elif kind == "image":
                prompt.image(height, width, pixels=self._pixels(next(images)))
            else:
                video, soundtrack = next(videos)
                clip = self._pixels(video[_subsample(len(video), frames)])
                mel = self._mel(next(audios)) if soundtrack is not None else None
                prompt.video(frames, height, width, seconds_per_step=self.step_frames / self.video_fps, clip=clip,
                             audio_frames=0 if mel is None else mel.shape[-1], mel=mel)
            learn.extend([False] * (len(prompt.ids) - before))

        for role, content in loaded.turns:
            learned = role in ("", "assistant")
            if role:
                add(self.chat[0].format(role=role), False)
            for piece in _MARKER_RE.split(content):
                if piece in _KIND_OF:
                    media(_KIND_OF[piece])
                elif piece:
                    add(piece, learned)
            if role:
                add(self.chat[1], learned)
        return ThinkerSample(prompt, learn)

    def batch(self, encoded: Sequence[ThinkerSample], *, pack: bool = False) -> ThinkerBatch:
        """Pad encoded samples into a :class:`ThinkerBatch` (the transformers processor's packing)."""
        if pack:
            raise OmnikitValueError("`pack=True` is not supported for published Thinkers; pad instead")
        inputs = collate_prompts([e.prompt for e in encoded], padding_side=self.padding_side, pad_id=self.pad_id)
        rows = [[i if flag else IGNORE_INDEX for i, flag in zip(e.prompt.ids, e.learn)] for e in encoded]
        labels, _ = pad_rows(rows, self.padding_side, IGNORE_INDEX)
        return ThinkerBatch(inputs, labels, labels != IGNORE_INDEX, inputs["attention_mask"].sum(-1))

