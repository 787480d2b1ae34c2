"""PyAV backend: a packet index built by demuxing (no decoding), then keyframe seeks per request."""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.deps import require
from omnikit.video.backends.base import VideoBackend, check_path
from omnikit.video.clip import VideoInfo

__all__ = ["PyAVBackend"]


class PyAVBackend(VideoBackend):
    """Decode with PyAV (FFmpeg).

    Opening demuxes the video stream once to learn every frame's presentation timestamp and the
    keyframes; :meth:`read` then decodes only from the keyframe before each requested frame.

    Args:
        path: the video file.
        threads: decoder threads (``0``: FFmpeg picks).
    """

    name = "pyav"

    def __init__(self, path: str, *, threads: int = 0) -> None:
        av = require("av")
        self._av = av
        self.path = check_path(path)
        try:
            self._container = av.open(self.path)
        except av.FFmpegError as err:
            raise OmnikitValueError(f"`path`: cannot open {self.path!r} as a video ({err})") from err
        if not self._container.streams.video:
            self._container.close()
            raise OmnikitValueError(f"`path`: {self.path!r} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        try:
            self._pts, self.info = self._build_index()
        except Exception:
            self._container.close()
            raise
        self._index_of_pts = {int(p): i for i, p in enumerate(self._pts)}

    def _build_index(self) -> tuple[np.ndarray, VideoInfo]:
        pts, key_pts = [], []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream flush packet
                if packet.pts is None:
                    raise OmnikitValueError(
                        f"`path`: {self.path!r} has video packets without presentation timestamps "
                        "(a raw elementary stream?); remux it into mp4/mkv first"
                    )
                pts.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
        except self._av.FFmpegError as err:
            raise OmnikitValueError(f"`path`: {self.path!r} is corrupt ({err})") from err
        if not pts:
            raise OmnikitValueError(f"`path`: {self.path!r} has a video stream with no frames")
        declared = int(self._stream.frames or 0)
        if declared > len(pts):
            warnings.warn(
                f"`path`: {self.path!r} declares {declared} frames in its header but only {len(pts)} could be "
                "read (a truncated file?); using the frames that exist",
                stacklevel=4,
            )
        order = np.sort(np.asarray(pts, dtype=np.int64))
        if np.any(np.diff(order) == 0):
            raise OmnikitValueError(f"`path`: {self.path!r} has frames with duplicate timestamps")
        base = self._stream.time_base
        seconds = (order - order[0]).astype(np.float64) * base.numerator / base.denominator
        keyframes = np.searchsorted(order, np.asarray(sorted(key_pts) or [order[0]], dtype=np.int64))
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else (len(order) - 1) / max(seconds[-1], 1e-9)
        info = VideoInfo(
            path=self.path,
            num_frames=len(order),
            fps=fps,
            width=self._stream.codec_context.width,
            height=self._stream.codec_context.height,
            timestamps=seconds,
            keyframes=keyframes.astype(np.int64),
            has_audio=bool(self._container.streams.audio),
        )
        return order, info

    def _decoder_from(self, keyframe: int) -> Iterator[Any]:
        """Frames decoded from (at most) the keyframe ``keyframe``, a frame index, onwards."""
        self._container.seek(int(self._pts[keyframe]), stream=self._stream, backward=True, any_frame=False)
        return self._container.decode(self._stream)

    def _decoded(self, decoder: Iterator[Any]) -> Iterator[tuple[int, Any]]:
        try:
            for frame in decoder:
                index = self._index_of_pts.get(frame.pts)
                if index is not None:
                    yield index, frame
        except self._av.FFmpegError as err:
            raise OmnikitValueError(f"`path`: {self.path!r} has corrupt frame data ({err})") from err

    @staticmethod
    def _to_array(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        if size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=size[0], width=size[1])

    def _decode_one(self, target: int, keyframe: int, frames: Iterator[tuple[int, Any]] | None):
        """Decode forward to ``target`` (seeking first when ``frames`` is None); returns (frame, iterator)."""
        keys = self.info.keyframes
        k = bisect.bisect_right(keys.tolist(), keyframe) - 1
        while True:
            if frames is None:
                frames = self._decoded(self._decoder_from(int(keys[k])))
            for index, frame in frames:
                if index == target:
                    return frame, frames
                if index > target:
                    break  # the seek landed past the target: retry from an earlier keyframe
            else:
                raise OmnikitValueError(f"`path`: {self.path!r} ended before frame {target} could be decoded")
            if k == 0:
                raise OmnikitValueError(f"`path`: frame {target} of {self.path!r} cannot be reached by seeking")
            k, frames = k - 1, None

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> torch.Tensor:
        wanted = self.check_indices(indices)
        keys = self.info.keyframes
        decoded: dict[int, np.ndarray] = {}
        frames, position = None, -1
        for target in np.unique(wanted).tolist():
            keyframe = int(keys[np.searchsorted(keys, target, side="right") - 1]) if target >= keys[0] else 0
            if frames is None or keyframe > position:
                frames = None  # seeking is cheaper than decoding forward to the next target
            frame, frames = self._decode_one(target, keyframe, frames)
            position = target
            decoded[target] = self._to_array(frame, size)
        if not decoded:
            h, w = size or (self.info.height, self.info.width)
            return torch.empty(0, 3, h, w, dtype=torch.uint8)
        stack = np.stack([decoded[int(i)] for i in wanted])
        return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()

    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in self._decoded(self._decoder_from(0)):
            yield index, self._to_array(frame, size)

    def close(self) -> None:
        self._container.close()
