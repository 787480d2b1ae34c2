"""Video decoding backends behind one interface (:class:`VideoBackend`) and :func:`open_video`."""

from __future__ import annotations

import importlib.util

from omnikit.utils.checks import check_choice
from omnikit.video.backends.base import Size, VideoBackend, check_path, resolve_size

__all__ = ["BACKENDS", "Size", "VideoBackend", "available_backends", "open_video", "resolve_size"]

#: Backends by name; ``"auto"`` picks the first available of ``("pyav", "decord")``.
BACKENDS: tuple[str, ...] = ("auto", "pyav", "decord")


def available_backends() -> list[str]:
    """Names of the backends whose package is importable here."""
    return [name for name, module in (("pyav", "av"), ("decord", "decord")) if importlib.util.find_spec(module)]


def open_video(path: str, *, backend: str = "auto", threads: int = 0) -> VideoBackend:
    """Open ``path`` with ``backend`` (``"auto"``, ``"pyav"`` or ``"decord"``).

    ``"auto"`` prefers PyAV (maintained, exact integer timestamps, audio) and falls back to decord.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty, corrupt or unsupported file, or an unknown ``backend``.
        ImportError: the backend's package is not installed (names the omnikit extra).
    """
    check_choice(backend, "backend", BACKENDS)
    check_path(path)
    if backend == "auto":
        backend = (available_backends() or ["pyav"])[0]
    if backend == "pyav":
        from omnikit.video.backends.pyav import PyAVBackend

        return PyAVBackend(path, threads=threads)
    from omnikit.video.backends.decord_backend import DecordBackend

    return DecordBackend(path, threads=threads)
