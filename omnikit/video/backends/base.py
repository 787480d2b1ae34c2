"""The interface every video backend implements, path checks and output-size resolution."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.video.clip import VideoInfo

__all__ = ["Size", "VideoBackend", "check_path", "resolve_size"]

#: ``None`` (keep), an int (the shorter side, aspect kept) or ``(height, width)``.
Size = int | tuple[int, int] | None


def check_path(path: object) -> str:
    """A readable, non-empty file path as ``str``; ``FileNotFoundError`` / ``ValueError`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise OmnikitTypeError(f"`path` expected a str or os.PathLike but got {type(path).__name__}")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"`path`: no video file at {str(file)!r}")
    if file.stat().st_size == 0:
        raise OmnikitValueError(f"`path`: {str(file)!r} is an empty (0-byte) file, not a video")
    return str(file)


#: the largest frame side :func:`resolve_size` accepts (16K video; beyond it decoders fail obscurely)
MAX_SIDE = 16384


def resolve_size(size: Size, height: int, width: int) -> tuple[int, int] | None:
    """The ``(height, width)`` frames are resized to, or ``None`` to keep them as stored.

    An int sets the shorter side and keeps the aspect ratio (the longer side rounded to an even
    number of pixels); a pair is taken as ``(height, width)``.
    """
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        if not 1 <= size <= MAX_SIDE:
            raise OmnikitValueError(f"`size` expected an int in [1, {MAX_SIDE}] but got {size}")
        scale = size / min(height, width)
        long_side = max(2, 2 * round(max(height, width) * scale / 2))
        return (size, long_side) if height <= width else (long_side, size)
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SIDE for s in size)
    ):
        return int(size[0]), int(size[1])
    raise OmnikitValueError(
        f"`size` expected None, an int or (height, width) of ints in [1, {MAX_SIDE}] but got {size!r}"
    )


class VideoBackend(ABC):
    """An open video: its :class:`VideoInfo` and frame access by index.

    Use as a context manager, or call :meth:`close`.
    """

    name: str
    info: VideoInfo

    @abstractmethod
    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> torch.Tensor:
        """Decode the frames at ``indices`` (any order, repeats allowed): ``(T, 3, H, W)`` uint8 RGB.

        Only the frames needed are decoded: the backend seeks to the keyframe before each
        target unless decoding forward from where it is is cheaper.
        """

    @abstractmethod
    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode every frame in order, yielding ``(index, (H, W, 3) uint8)``."""

    @abstractmethod
    def close(self) -> None:
        """Release the file."""

    def check_indices(self, indices: Sequence[int]) -> np.ndarray:
        """``indices`` as an int64 array, each in ``[0, num_frames)``."""
        array = np.asarray(indices)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise OmnikitValueError(f"`indices` expected a 1-D sequence of ints but got {array.dtype} {array.shape}")
        n = self.info.num_frames
        if array.size and (array.min() < 0 or array.max() >= n):
            raise OmnikitValueError(
                f"`indices` expected frame numbers in [0, {n}) but got min {array.min()}, max {array.max()}"
            )
        return array.astype(np.int64)

    def __enter__(self) -> VideoBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
