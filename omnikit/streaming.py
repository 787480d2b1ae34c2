"""Streaming: causal modules that carry typed state between chunks.

A :class:`StreamingModule` declares the state it needs between calls (a KV cache, the tail of a
convolution's input ...). Streaming is switched on for a whole module tree at once::

    with model.streaming(batch_size=2):
        for chunk in chunks:          # (B, ..., T_chunk)
            out = model(chunk)        # == the matching slice of model(full_input)

Outside the context every module runs offline (no state). A module that runs some children on whole
items at every call (a fusion model's media encoders, run on all of a chunk's media whatever the text
chunk) names them in ``offline_submodules``: a stream opened on it or on any module holding it leaves
them offline (their own ``streaming`` still opens them). ``model.streaming(B, max_len=N)``
preallocates the attention layers' key/value caches for ``N`` positions
(:class:`~omnikit.layers.kv_cache.StaticKVCache`): fixed shapes, for compiled decoding. The contract
suite checks, for every streaming model, that chunked output equals the full forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar, Generic, TypeVar

from torch import nn

from omnikit.utils.checks import OmnikitValueError

__all__ = [
    "StreamingContainer",
    "StreamingModule",
    "StreamingState",
    "check_stream_batch",
    "is_streaming",
    "stream_members",
    "streaming",
    "suspended",
]


class StreamingState:
    """Base class of per-module streaming state; subclasses are dataclasses with typed fields."""

    batch_size: int

    def check_batch(self, batch: int, name: str = "x") -> None:
        """Raise if a chunk's batch differs from the one the stream was opened with."""
        if batch != self.batch_size:
            raise OmnikitValueError(
                f"`{name}` has batch {batch} but the stream was opened with batch_size={self.batch_size}"
            )


StateT = TypeVar("StateT", bound=StreamingState)


class StreamingContainer:
    """Mixin giving a model that contains streaming modules a ``.streaming(batch_size)`` method.

    ``offline_submodules``: names of child modules (any ``nn.Module`` may set it) that every call runs
    on whole items, never chunk by chunk; a stream opened on this module or an ancestor leaves them
    offline (see :func:`stream_members`).
    """

    offline_submodules: ClassVar[tuple[str, ...]] = ()

    def streaming(self, batch_size: int, *, max_len: int | None = None) -> AbstractContextManager[nn.Module]:
        """Context manager: stream every streaming submodule (see :func:`streaming`)."""
        return streaming(self, batch_size, max_len=max_len)  # type: ignore[arg-type]


class StreamingModule(StreamingContainer, nn.Module, Generic[StateT]):
    """An ``nn.Module`` that can run chunk by chunk inside ``with module.streaming(batch_size):``."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: StateT | None = None

    def init_streaming_state(self, batch_size: int) -> StateT:
        """Fresh state for a stream of ``batch_size`` items (tensors may be allocated lazily)."""
        raise NotImplementedError

    def init_static_state(self, batch_size: int, max_len: int) -> StateT:
        """State of a stream of at most ``max_len`` positions with fixed shapes (preallocated); by
        default the ordinary state (a module whose state has no fixed-size form keeps it)."""
        return self.init_streaming_state(batch_size)

    @property
    def streaming_state(self) -> StateT | None:
        """The live state, or ``None`` when running offline."""
        return self._streaming_state


def stream_members(module: nn.Module) -> list[StreamingModule]:
    """The :class:`StreamingModule` s a stream opened on ``module`` holds (``module`` itself included): every
    one inside it except those inside a child that a module within ``module`` names in its
    ``offline_submodules`` (wherever else that child is also reachable)."""
    offline: set[int] = set()
    for owner in module.modules():
        for name in getattr(owner, "offline_submodules", ()):
            if not hasattr(owner, name):
                raise OmnikitValueError(
                    f"{type(owner).__name__}.offline_submodules names `{name}`, which it does not have"
                )
            child = getattr(owner, name)  # None: an absent part (e.g. no audio encoder)
            if isinstance(child, nn.Module) and child is not module:
                offline.update(id(m) for m in child.modules())
    return [m for m in module.modules() if isinstance(m, StreamingModule) and id(m) not in offline]


#: Attribute under which :func:`streaming` keeps the members of the stream it opened on a module while it is
#: open, so that the checks every streamed call makes (:func:`is_streaming`, :func:`check_stream_batch`) on that
#: module do not walk its submodules again.
_OPEN_MEMBERS = "_omnikit_stream_members"


def _members(module: nn.Module) -> list[StreamingModule]:
    """:func:`stream_members`, read from the stream opened on ``module`` itself when one is open."""
    members = module.__dict__.get(_OPEN_MEMBERS)
    return stream_members(module) if members is None else members


def is_streaming(module: nn.Module) -> bool:
    """True when a stream of ``module`` is open: any of its :func:`stream_members` holds live state."""
    return any(m.streaming_state is not None for m in _members(module))


def check_stream_batch(module: nn.Module, batch: int, name: str) -> None:
    """Inside an open stream of ``module``, raise naming ``name`` unless ``batch`` is the stream's."""
    for m in _members(module):
        if m.streaming_state is not None:
            m.streaming_state.check_batch(batch, name)
            return


@contextmanager
def streaming(module: nn.Module, batch_size: int, *, max_len: int | None = None) -> Iterator[nn.Module]:
    """Open a stream over every :class:`StreamingModule` inside ``module`` (any ``nn.Module``) but those
    its modules keep offline (``offline_submodules``, see :func:`stream_members`).

    ``max_len``: the stream holds at most this many positions and its states are preallocated
    (:meth:`StreamingModule.init_static_state`), so their shapes never change while it runs.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OmnikitValueError(f"`batch_size` expected an int >= 1 but got {batch_size!r}")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
        raise OmnikitValueError(f"`max_len` expected an int >= 1 or None but got {max_len!r}")
    members = stream_members(module)
    if not members:
        raise OmnikitValueError(f"{type(module).__name__} has no streaming submodules; it cannot stream")
    if any(m.streaming_state is not None for m in members):
        raise OmnikitValueError(f"{type(module).__name__} is already streaming; close the open stream first")
    try:
        for m in members:
            m._streaming_state = (
                m.init_streaming_state(batch_size) if max_len is None else m.init_static_state(batch_size, max_len)
            )
        module.__dict__[_OPEN_MEMBERS] = members
        yield module
    finally:
        module.__dict__.pop(_OPEN_MEMBERS, None)
        for m in members:
            m._streaming_state = None


@contextmanager
def suspended(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` offline inside an open stream: its streaming submodules' state is set aside
    and restored on exit (e.g. a depth transformer that starts afresh at every frame)."""
    members = [m for m in module.modules() if isinstance(m, StreamingModule)]
    states = [m._streaming_state for m in members]
    for m in members:
        m._streaming_state = None
    try:
        yield module
    finally:
        for m, state in zip(members, states):
            m._streaming_state = state
