"""Token budget of an omni prompt: what audio, video, images and text cost, and what is left.

For an :class:`~omnikit.fusion.OmniThinker` (Qwen2.5-Omni, Qwen3-Omni, their tiny variants, or one
loaded with :func:`omnikit.convert.load_hf`) or an :class:`~omnikit.fusion.EarlyFusionOmni`
(``omni_early_*``: no markers, its video adapter's token grid) :class:`TokenCounter` counts the prompt positions the
processor writes for each item: its placeholder run (what the encoder produces) plus the start/end
markers around it. The counts use the model's own arithmetic (the audio tower's
``output_lengths``, the vision tower's patch and merge sizes), so they are exact for short media
(``tests/test_budget.py`` checks them against the encoders and :class:`~omnikit.fusion.OmniPrompt`)
and, being closed forms, extend to 10 hours of audio or thousands of frames::

    counter = TokenCounter(omnikit.create_model("qwen2_5_omni_thinker_tiny"))
    budget = counter.budget(32768, text=200, audio_seconds=[600.0], videos=[(60.0, 1.0, 448, 448)])
    print(budget.table())
    budget.check()                      # ValueError naming the overflow when it does not fit

Conventions (those of the Qwen-Omni processors): audio is 16 kHz log-mel at 100 frames per second
(``floor(seconds * 100)`` frames); a video of ``seconds`` at ``fps`` has ``ceil(seconds * fps)``
frames, grouped ``temporal_patch`` at a time (an odd last group repeats its frame); frame sides are
multiples of ``patch * merge`` pixels (others are refused, not rounded); an image is one frame.

Policy for a sample that does not fit (:meth:`TokenCounter.fit_video_fps`): the video frame rate is
lowered (never the resolution, the audio or the text) to the highest rate, in steps of
``fps_step``, whose total fits; below ``min_fps`` the sample is refused with a ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive, check_positive_number

__all__ = ["MEL_FRAMES_PER_SECOND", "TokenBudget", "TokenCounter", "VideoSpec"]

#: Log-mel frames per second of audio (16 kHz, hop 160), the audio towers' input rate.
MEL_FRAMES_PER_SECOND = 100

#: ``(seconds, fps, height, width)`` of a video.
VideoSpec = tuple[float, float, int, int]


def _items(value: object, name: str, width: tuple[int, str] | None = None) -> list:
    """``value`` as a list of numbers (``width``: of tuples of that many numbers, described as ``width[1]``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise OmnikitTypeError(f"`{name}` expected a list but got {type(value).__name__}")
    if width is not None:
        bad = [v for v in value if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != width[0]]
        if bad:
            raise OmnikitValueError(f"`{name}` expected a list of {width[1]} tuples but got {bad[0]!r}")
    return list(value)


@dataclass(frozen=True)
class TokenBudget:
    """Prompt positions per item against a context of ``context`` positions."""

    context: int
    rows: tuple[tuple[str, int], ...]

    @property
    def used(self) -> int:
        return sum(tokens for _, tokens in self.rows)

    @property
    def left(self) -> int:
        """Positions left for generation (negative when the prompt overflows)."""
        return self.context - self.used

    @property
    def fits(self) -> bool:
        return self.left >= 0

    def table(self) -> str:
        """A small text table: one row per item, then the total and what is left."""
        rows = [*self.rows, ("total", self.used), ("context", self.context), ("left", self.left)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'item':<{width}}  {'tokens':>10}", "-" * (width + 12)]
        lines += [f"{name:<{width}}  {tokens:>10,}" for name, tokens in rows]
        return "\n".join(lines)

    def check(self) -> None:
        """Raise a ValueError naming the overflow when the prompt does not fit the context."""
        if not self.fits:
            raise OmnikitValueError(
                f"the prompt needs {self.used} tokens but the context holds {self.context} "
                f"({-self.left} over):\n{self.table()}"
            )


class TokenCounter:
    """Prompt positions of text, audio, images and videos for one omni Thinker (see the module doc)."""

    def __init__(self, model: nn.Module) -> None:
        self.early = all(hasattr(model, a) for a in ("thinker", "video", "audio", "adapters"))
        if not self.early and not (hasattr(model, "text_model") and hasattr(model, "scheme")):
            raise OmnikitTypeError(
                f"`model` expected an OmniThinker or an EarlyFusionOmni (media towers before a Thinker) but got "
                f"{type(model).__name__}"
            )
        self.model = model
        self.markers = getattr(model, "marker_tokens", {})

    def _audio_encoder(self) -> nn.Module | None:
        if self.early:
            return None if self.model.audio is None else self.model.audio.encoder
        return self.model.audio_encoder

    def _early_grid_tokens(self, frames: int, height: int, width: int, name: str) -> int:
        """Tokens of an early-fusion video adapter: its ``grid`` of ``(1, frames, C, height, width)``."""
        adapter = self.model.video
        if adapter is None or name == "image":
            raise OmnikitValueError(f"`{name}` given but {type(self.model).__name__} takes no {name}s")
        encoder = adapter.encoder
        for side, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < encoder.patch or value % encoder.patch:
                raise OmnikitValueError(
                    f"`{name}` {side} expected a positive multiple of {encoder.patch} px but got {value}"
                )
        t, h, w = adapter.grid((1, frames, encoder.in_channels, height, width))
        return t * h * w

    def _wrapped(self, kind: str, tokens: int) -> int:
        return tokens + sum(f"{kind}_{edge}_token_id" in self.markers for edge in ("start", "end"))

    def _audio_body(self, seconds: float) -> int:
        encoder = self._audio_encoder()
        if encoder is None:
            raise OmnikitValueError(f"`audio_seconds` given but {type(self.model).__name__} has no audio encoder")
        check_positive_number(seconds, "audio_seconds")
        frames = math.floor(seconds * MEL_FRAMES_PER_SECOND)
        if frames < 1:
            raise OmnikitValueError(f"`audio_seconds` expected at least one mel frame (0.01 s) but got {seconds}")
        return int(encoder.output_lengths(torch.tensor([frames]))[0])

    def _grid_tokens(self, frames: int, height: int, width: int, name: str) -> int:
        if self.early:
            return self._early_grid_tokens(frames, height, width, name)
        vision = self.model.vision_encoder
        if vision is None:
            raise OmnikitValueError(f"`{name}` given but {type(self.model).__name__} has no vision encoder")
        c = vision.config
        pt, ph, pw = c.patch
        for side, value, patch in (("height", height, ph), ("width", width, pw)):
            step = patch * c.merge_size
            if not isinstance(value, int) or value < step or value % step:
                raise OmnikitValueError(f"`{name}` {side} expected a positive multiple of {step} px but got {value}")
        merged = (height // (ph * c.merge_size)) * (width // (pw * c.merge_size))
        return math.ceil(frames / pt) * merged

    def text(self, n: int) -> int:
        """``n`` text tokens cost ``n`` positions."""
        if not isinstance(n, int) or n < 0:
            raise OmnikitValueError(f"`text` expected an int >= 0 but got {n!r}")
        return n

    def audio(self, seconds: float) -> int:
        """An audio clip: its encoder tokens plus the audio start/end markers."""
        return self._wrapped("audio", self._audio_body(seconds))

    def image(self, height: int, width: int) -> int:
        """An image: one frame's merged patches plus the vision start/end markers."""
        return self._wrapped("vision", self._grid_tokens(1, height, width, "image"))

    @staticmethod
    def video_frames(seconds: float, fps: float) -> int:
        """Frames sampled from ``seconds`` of video at ``fps``: ``ceil(seconds * fps)``."""
        check_positive_number(seconds, "video_seconds")
        check_positive_number(fps, "fps")
        return math.ceil(seconds * fps - 1e-9)

    def video(self, seconds: float, fps: float, height: int, width: int, *, with_audio: bool = False) -> int:
        """A video: merged patches of its frames plus the vision markers; ``with_audio`` adds its
        soundtrack's tokens (interleaved in time) and the audio markers around them."""
        tokens = self._grid_tokens(self.video_frames(seconds, fps), height, width, "video")
        if with_audio:
            tokens += self.audio(seconds)
        return self._wrapped("vision", tokens)

    def budget(
        self,
        context: int,
        *,
        text: int = 0,
        audio_seconds: Sequence[float] = (),
        images: Sequence[tuple[int, int]] = (),
        videos: Sequence[VideoSpec] = (),
        videos_with_audio: bool = False,
    ) -> TokenBudget:
        """The :class:`TokenBudget` of one prompt in a context of ``context`` positions."""
        check_positive(context, "context")
        audio_seconds = _items(audio_seconds, "audio_seconds")
        images = _items(images, "images", (2, "(height, width)"))
        videos = _items(videos, "videos", (4, "(seconds, fps, height, width)"))
        rows = [("text", self.text(text))] if text else []
        rows += [(f"audio {s:g} s", self.audio(s)) for s in audio_seconds]
        rows += [(f"image {h}x{w}", self.image(h, w)) for h, w in images]
        rows += [
            (f"video {s:g} s @ {f:g} fps {h}x{w}{' +audio' if videos_with_audio else ''}",
             self.video(s, f, h, w, with_audio=videos_with_audio))
            for s, f, h, w in videos
        ]
        return TokenBudget(context, tuple(rows))

    def fit_video_fps(
        self,
        context: int,
        videos: Sequence[VideoSpec],
        *,
        min_fps: float = 0.1,
        fps_step: float = 0.1,
        **fixed: object,
    ) -> list[VideoSpec]:
        """``videos`` with every frame rate lowered to the highest (a multiple of ``fps_step``, at most
        the one asked) at which the whole prompt fits; ``fixed`` are the other :meth:`budget` items.

        Raises:
            ValueError: even ``min_fps`` does not fit (the message prints the budget at ``min_fps``).
        """
        check_positive_number(min_fps, "min_fps")
        check_positive_number(fps_step, "fps_step")
        if self.budget(context, videos=videos, **fixed).fits:  # type: ignore[arg-type]
            return list(videos)
        steps = math.floor(max(f for _, f, _, _ in videos) / fps_step + 1e-9)
        for k in range(steps, 0, -1):
            fps = k * fps_step
            if fps < min_fps - 1e-9:
                break
            scaled = [(s, min(f, fps), h, w) for s, f, h, w in videos]
            if self.budget(context, videos=scaled, **fixed).fits:  # type: ignore[arg-type]
                return scaled
        floor = [(s, min(f, min_fps), h, w) for s, f, h, w in videos]
        budget = self.budget(context, videos=floor, **fixed)  # type: ignore[arg-type]
        raise OmnikitValueError(
            f"the sample does not fit a context of {context} tokens even at min_fps={min_fps}:\n{budget.table()}"
        )
