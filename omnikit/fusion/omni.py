"""The early-fusion omni model: media adapters -> placeholders -> TMRoPE -> Thinker.

::

    model = omnikit.create_model("omni_early_tiny")
    logits = model(input_ids, frames=frames, audio_features=mels, audio_lengths=n)
    logits = model(input_ids, media={"video": frames, "audio": mels}, media_lengths={"audio": n})  # the same
    out = model.generate(prompt_ids, frames=frames, audio_features=mels, max_new_tokens=8)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.fusion.absent import encode_media, example_media
from omnikit.fusion.adapters import AudioAdapter, VideoAdapter
from omnikit.fusion.boundary import check_media, check_prompt
from omnikit.fusion.media import HoldsAdapters
from omnikit.fusion.modality import MEDIA_MODALITIES
from omnikit.fusion.thinker import GenerationOutput, Thinker, ThinkerStep
from omnikit.fusion.tmrope import TMRoPEScheme, VisualGrid, checked_position_ids
from omnikit.layers.masks import lengths_to_mask
from omnikit.outputs import EncoderOutput
from omnikit.streaming import StreamingContainer
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_lengths

__all__ = ["EarlyFusionOmni", "FusedInputs"]


@dataclass(frozen=True)
class FusedInputs:
    """Everything the Thinker needs for one multimodal batch, checked once at the public entry.

    Attributes:
        media: ``{modality: (N, dim) tokens or EncoderOutput}`` to scatter at the placeholders (see
            :func:`~omnikit.fusion.early.scatter_media`), checked against the prompt's placeholders: a
            :class:`~omnikit.fusion.boundary.CheckedMedia` that the Thinker trusts for the same ``input_ids``
            and ``key_padding_mask``.
        positions: ``(3, B, T)`` TMRoPE ids.
        next_position: ``(B,)`` the id of the first generated token.
        key_padding_mask: ``(B, T)`` bool or None.
        absent: ``()`` zero that depends on every absent encoder (``run_absent_media``), or None.
    """

    media: Mapping[str, torch.Tensor | EncoderOutput]
    positions: torch.Tensor
    next_position: torch.Tensor
    key_padding_mask: torch.Tensor | None
    absent: torch.Tensor | None = None

    def with_absent(self, out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The Thinker's output (a tensor or a tuple of them) plus :attr:`absent`, so the absent
        encoders' dummy runs join the graph (unchanged without any)."""
        if self.absent is None:
            return out
        return tuple(t + self.absent for t in out) if isinstance(out, tuple) else out + self.absent


#: The TMRoPE keyword of each modality's items.
_TMROPE_ITEMS = {"image": "images", "video": "videos", "audio": "audios"}


class EarlyFusionOmni(HoldsAdapters, StreamingContainer, nn.Module):
    """Video + audio + text in, text out, by early fusion into a :class:`Thinker`.

    Args:
        thinker: the language model (with ``media_tokens`` and M-RoPE sections).
        video: frames adapter (None: no video input); held as ``adapters["video"]``.
        audio: audio adapter (None: no audio input); held as ``adapters["audio"]``.
        adapters: more adapters ``{modality: adapter}`` (modalities of :data:`MEDIA_MODALITIES`;
            an adapter's items are token counts or :class:`VisualGrid` s, see :mod:`omnikit.fusion.media`).
        scheme: TMRoPE scheme (its sections must equal the Thinker's).
        audio_in_video: audio item ``i`` is the soundtrack of video ``i``, interleaved with it.

    ``forward(input_ids (B, T), *, media={modality: tensor}, media_lengths={modality: (N,)}, lengths (B,))``
    -> logits ``(B, T, vocab)``; the keywords ``frames (N_v, F, C, H, W)``, ``audio_features
    (N_a, n_mels, L)`` and ``audio_lengths (N_a,)`` are ``media["video"]``, ``media["audio"]`` and
    ``media_lengths["audio"]``.

    ``run_absent_media = True`` (set by :func:`omnikit.distributed.parallelize`) runs an encoder
    whose modality is absent from the batch on a dummy input (:mod:`omnikit.fusion.absent`).
    """

    supports_streaming = False

    def __init__(
        self,
        thinker: Thinker,
        *,
        video: VideoAdapter | None = None,
        audio: AudioAdapter | None = None,
        adapters: Mapping[str, nn.Module] | None = None,
        scheme: TMRoPEScheme,
        audio_in_video: bool = False,
    ) -> None:
        super().__init__()
        sections = thinker.config.mrope_sections
        if sections is None or tuple(sections) != tuple(scheme.sections):
            raise OmnikitValueError(
                f"`scheme.sections` {scheme.sections} must equal the Thinker's mrope_sections {sections}"
            )
        if bool(thinker.config.mrope_interleaved) != scheme.interleaved:
            raise OmnikitValueError("`scheme.interleaved` must equal the Thinker's mrope_interleaved")
        self._set_adapters(adapters, MEDIA_MODALITIES, video=video, audio=audio)
        if audio_in_video and (self.video is None or self.audio is None):
            raise OmnikitValueError("`audio_in_video=True` needs both a video and an audio adapter")
        self.thinker = thinker
        self.scheme, self.audio_in_video = scheme, audio_in_video
        self.run_absent_media = False

    @property
    def output_dim(self) -> int:
        return self.thinker.config.vocab_size

    def fuse(
        self,
        input_ids: torch.Tensor,
        *,
        media: Mapping[str, torch.Tensor] | None = None,
        media_lengths: Mapping[str, torch.Tensor] | None = None,
        lengths: torch.Tensor | None = None,
        **keywords: torch.Tensor | None,
    ) -> FusedInputs:
        """Encode the media, check it against the placeholders and compute TMRoPE ids.

        ``media`` / ``media_lengths``: ``{modality: tensor}``; ``keywords``: ``frames``, ``audio_features``,
        ``audio_lengths`` (see :func:`omnikit.fusion.media.collect_media`)."""
        prompt = check_prompt(input_ids, self.thinker.config.vocab_size, self.thinker.media_tokens)
        given = self.checked_media(media, media_lengths, **keywords)
        padding = None
        if lengths is not None:
            lengths = check_lengths(lengths, "lengths", batch=input_ids.shape[0], max_len=input_ids.shape[1])
            padding = lengths_to_mask(lengths.to(input_ids.device), input_ids.shape[1])
            prompt = prompt.with_padding(padding)
        adapted, absent = encode_media(self.adapters, given, run_absent=self.run_absent_media, device=input_ids.device)
        items = {modality: out.items for modality, out in adapted.items()}
        if self.audio_in_video:  # the audio items are the videos' soundtracks, not items of their own
            if torch.compiler.is_compiling():
                raise OmnikitValueError(
                    "`audio_in_video=True` cannot be traced: the soundtracks' token counts and their interleaved "
                    "TMRoPE ids are read on the host; run this model eagerly"
                )
            soundtracks = items.pop("audio", [])
            if "video" in items:
                items["video"] = self._with_soundtracks(items["video"], soundtracks)
        positions, next_position = checked_position_ids(
            prompt.modality_ids, {_TMROPE_ITEMS[m]: i for m, i in items.items()}, self.scheme, padding
        )
        tokens = check_media(prompt, {m: out.media for m, out in adapted.items()}, self.thinker.config.dim)
        return FusedInputs(tokens, positions, next_position, padding, absent)

    @staticmethod
    def _with_soundtracks(videos: list[VisualGrid], audios: Sequence[int] | torch.Tensor) -> list[VisualGrid]:
        """Audio in video: grid ``i`` with audio item ``i``'s tokens interleaved."""
        if len(audios) != len(videos):
            raise OmnikitValueError(
                f"audio_in_video: {len(videos)} videos in `frames` but {len(audios)} audio items"
            )
        return [VisualGrid(g.t, g.h, g.w, g.seconds_per_step, int(a)) for g, a in zip(videos, audios)]

    def forward(
        self, input_ids: torch.Tensor, *, return_hidden: bool = False, **inputs: torch.Tensor | None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, vocab)`` (and the final hidden states with ``return_hidden``); ``inputs``: the
        media and ``lengths`` keywords of :meth:`fuse`."""
        fused = self.fuse(input_ids, **inputs)
        return fused.with_absent(self.thinker(input_ids, media=fused.media, positions=fused.positions,
                                              key_padding_mask=fused.key_padding_mask, return_hidden=return_hidden))

    def stream_generate(
        self,
        input_ids: torch.Tensor,
        *,
        media: Mapping[str, torch.Tensor] | None = None,
        media_lengths: Mapping[str, torch.Tensor] | None = None,
        frames: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        fused: FusedInputs | None = None,
        **generate_kwargs,
    ) -> Iterator[ThinkerStep]:
        """Yield :class:`ThinkerStep` s for a multimodal prompt (see :meth:`Thinker.stream_generate`);
        the media as for :meth:`fuse`, or ``fused``: what :meth:`fuse` returned for ``input_ids`` (checked and
        encoded already, the media keywords then left out)."""
        if fused is None:
            fused = self.fuse(input_ids, media=media, media_lengths=media_lengths, frames=frames,
                              audio_features=audio_features, audio_lengths=audio_lengths)
        yield from self.thinker.stream_generate(
            input_ids, media=fused.media, positions=fused.positions, next_position=fused.next_position,
            **generate_kwargs,
        )

    def generate(self, input_ids: torch.Tensor, **kwargs) -> GenerationOutput:
        """Run :meth:`stream_generate` to the end."""
        steps: list[ThinkerStep] = list(self.stream_generate(input_ids, **kwargs))
        return GenerationOutput.stack(steps)

    def media_example(self, batch: int, *, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Small random media for ``batch`` items (see :func:`omnikit.fusion.absent.example_media`)."""
        return example_media(self.video, self.audio, batch, generator=generator)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """One video of one tubelet step and one short audio clip per item, then text (right padded)."""
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        example = self.media_example(batch, generator=g)
        frames, mel, mel_lengths = example["frames"], example["audio_features"], example["audio_lengths"]
        t, h, w = self.video.grid(frames.shape)
        n_audio = int(self.audio.encoder.output_lengths(mel_lengths)[0])
        tokens = self.thinker.media_tokens
        prefix = [tokens.video] * (t * h * w) + [tokens.audio] * n_audio
        if self.audio_in_video:
            raise OmnikitValueError("contract inputs are defined for separate video and audio items")
        low = max(tokens.as_dict().values()) + 1
        ids = torch.randint(low, self.thinker.config.vocab_size, (batch, max(lengths)), generator=g)
        ids[:, : len(prefix)] = torch.tensor(prefix)
        return ContractInputs(
            {"input_ids": ids, "frames": frames, "audio_features": mel, "audio_lengths": mel_lengths,
             "lengths": torch.tensor(list(lengths))},
            torch.tensor(list(lengths)), {"input_ids": 1}, "lengths",
        )
