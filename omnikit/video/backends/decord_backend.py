"""decord backend: decord's own frame index, seeking and ``get_batch``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.deps import require
from omnikit.video.backends.base import VideoBackend, check_path
from omnikit.video.clip import VideoInfo

__all__ = ["DecordBackend"]

_CHUNK = 32  # frames per get_batch call when decoding everything


class DecordBackend(VideoBackend):
    """Decode with decord. Frames are resized inside the decoder (decord rejects some sizes: those
    are decoded at full size and resized with antialiased bilinear interpolation); timestamps are
    decord's (float32 seconds, rounded here to the microsecond).

    Args:
        path: the video file.
        threads: decoder threads (``0``: decord picks).
    """

    name = "decord"

    def __init__(self, path: str, *, threads: int = 0) -> None:
        self._decord = require("decord")
        self.path = check_path(path)
        self._threads = threads
        self._readers: dict[tuple[int, int] | None, Any] = {}
        self._rejected_sizes: set[tuple[int, int]] = set()
        reader = self._reader(None)
        n = len(reader)
        if n == 0:
            raise OmnikitValueError(f"`path`: {self.path!r} has a video stream with no frames")
        seconds = np.round(reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64), 6)
        first = reader[0].shape
        self.info = VideoInfo(
            path=self.path,
            num_frames=n,
            fps=float(reader.get_avg_fps()),
            width=int(first[1]),
            height=int(first[0]),
            timestamps=seconds - seconds[0],
            keyframes=np.asarray(reader.get_key_indices(), dtype=np.int64),
            has_audio=_has_audio(self.path),
        )

    def _reader(self, size: tuple[int, int] | None) -> Any:
        if size not in self._readers:
            h, w = size or (-1, -1)
            try:
                self._readers[size] = self._decord.VideoReader(
                    self.path, ctx=self._decord.cpu(0), width=w, height=h, num_threads=self._threads
                )
            except (self._decord.DECORDError, RuntimeError) as err:  # decord raises both
                raise OmnikitValueError(f"`path`: cannot open {self.path!r} as a video ({err})") from err
        return self._readers[size]

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> torch.Tensor:
        wanted = self.check_indices(indices)
        if wanted.size == 0:
            h, w = size or (self.info.height, self.info.width)
            return torch.empty(0, 3, h, w, dtype=torch.uint8)
        if size is not None and size not in self._rejected_sizes:
            try:
                return self._get_batch(self._reader(size), wanted, size)
            except OmnikitValueError:
                self._rejected_sizes.add(size)  # decord's scaler fails on some sizes: resize below
        frames = self._get_batch(self._reader(None), wanted, None)
        if size is None or tuple(frames.shape[-2:]) == size:
            return frames
        resized = F.interpolate(frames.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    def _get_batch(self, reader: Any, indices: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
        try:
            batch = reader.get_batch(indices.tolist()).asnumpy()
        except self._decord.DECORDError as err:
            raise OmnikitValueError(f"`path`: {self.path!r}: decord failed to decode ({err})") from err
        if size is not None and batch.shape[1:3] != size:
            raise OmnikitValueError(f"`size`: decord returned {batch.shape[1:3]} instead of {size}")
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()

    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.info.num_frames, _CHUNK):
            stop = min(start + _CHUNK, self.info.num_frames)
            batch = self.read(np.arange(start, stop), size).permute(0, 2, 3, 1).numpy()
            yield from zip(range(start, stop), batch)

    def close(self) -> None:
        self._readers.clear()


def _has_audio(path: str) -> bool:
    """Whether the container holds audio (asked through PyAV when installed)."""
    try:
        import av
    except ImportError:
        return False
    with av.open(str(Path(path))) as container:
        return bool(container.streams.audio)
