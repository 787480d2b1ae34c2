"""Options shared by the decoding loops (language models, Talkers, duplex): the KV-cache kind and compile.

``cache="static"`` preallocates every attention layer's cache for ``max_len`` positions
(:class:`~omnikit.layers.StaticKVCache`), so each decode step has fixed shapes; ``compile=True`` (or
a mode such as ``"reduce-overhead"``) then runs each step through ``torch.compile(fullgraph=True)``,
which traces it once for the whole loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_choice, check_positive

__all__ = [
    "CACHE_KINDS", "CPU_STEP_OPTIONS", "CacheKind", "CompileOption", "RepeatedSteps",
    "check_cache_settings", "compiled_step", "repeated_step",
]

CacheKind = Literal["dynamic", "static"]
#: ``"dynamic"``: a growable cache (shapes change every step); ``"static"``: preallocated slots.
CACHE_KINDS: tuple[str, ...] = ("dynamic", "static")

F = TypeVar("F", bound=Callable)


#: ``compile=`` of the decoding loops: False (eager), True (``torch.compile`` defaults), a mode such as
#: ``"reduce-overhead"`` (CUDA graphs) or a mapping of ``torch.compile`` keyword arguments
#: (``{"backend": "aot_eager"}``); ``fullgraph=True`` always.
CompileOption = bool | str | Mapping[str, Any]


def check_cache_settings(cache: str, max_len: int | None, compile: CompileOption, *, needed: int) -> int | None:
    """Validate the options of a decoding loop that needs ``needed`` positions; return the static
    cache's length (``max_len``, by default ``needed``) or None for a dynamic cache."""
    check_choice(cache, "cache", CACHE_KINDS)
    if not isinstance(compile, (bool, str, Mapping)):
        raise OmnikitTypeError(
            f"`compile` expected a bool, a torch.compile mode or a mapping of its arguments but got {compile!r}"
        )
    if cache == "dynamic":
        if max_len is not None:
            raise OmnikitValueError("`max_len` sizes a static cache; pass cache='static' with it")
        if compile is not False:
            raise OmnikitValueError(
                "`compile` needs cache='static': a dynamic cache changes shape every step and would recompile"
            )
        return None
    if max_len is None:
        return needed
    check_positive(max_len, "max_len")
    if max_len < needed:
        raise OmnikitValueError(f"`max_len` expected at least {needed} (prompt + new positions) but got {max_len}")
    return max_len


#: ``torch.compile`` modes that run the compiled code as CUDA graphs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

#: Inductor options of ``compile=True`` for a step whose module lies on the CPU. ``cpp_wrapper``: the code that
#: calls the step's kernels and library GEMMs is generated in C++, not Python (a small model's decoding step
#: is ~60 such calls, each paying Python's overhead otherwise); ``size_asserts=False``: no re-check of every
#: input's sizes and strides per call, which Dynamo's guards already made for the step's first call and a
#: loop's static cache keeps. Measured on greedy decoding of a 4-layer 128-wide Qwen3 (32 tokens, 1 CPU
#: thread): 25.2 -> 20.0 ms a call, compile (no cache) about twice as long.
CPU_STEP_OPTIONS: dict[str, Any] = {"cpp_wrapper": True, "size_asserts": False}


def _on_cpu(step: Callable[..., Any]) -> bool:
    """``step`` is a bound method of a module whose first parameter lies on the CPU."""
    module = getattr(step, "__self__", None)
    parameter = next(module.parameters(), None) if isinstance(module, nn.Module) else None
    return parameter is not None and parameter.device.type == "cpu"


def compiled_step(step: F, compile: CompileOption) -> F:
    """``torch.compile(step, fullgraph=True)`` with ``compile``'s mode or arguments (True: the defaults, with
    :data:`CPU_STEP_OPTIONS` for a module's step on the CPU). Dynamo caches the traced code with the
    function, so compiling the same step again reuses it.

    In a CUDA-graph mode the step's outputs live in the graph's memory pool, which the next call
    overwrites; they are cloned on return, so a caller may keep them (a generated hidden state, say).
    """
    if compile is True and _on_cpu(step):
        kwargs: dict[str, Any] = {"options": dict(CPU_STEP_OPTIONS)}
    else:
        kwargs = dict(compile) if isinstance(compile, Mapping) else {"mode": None if compile is True else compile}
    compiled = torch.compile(step, **{**kwargs, "fullgraph": True})
    if kwargs.get("mode") not in CUDA_GRAPH_MODES:
        return compiled

    def step_with_owned_outputs(*args: Any, **step_kwargs: Any) -> Any:
        return tree_map_only(torch.Tensor, torch.clone, compiled(*args, **step_kwargs))

    return step_with_owned_outputs  # type: ignore[return-value]


def repeated_step(repeat: bool) -> contextlib.AbstractContextManager[None]:
    """Around a call of a :func:`compiled_step` that repeats the loop's previous call (``repeat``): the
    same model, cache tensors, shapes and dtypes, only new values. Dynamo then runs only the guards that
    tell its cached graphs apart (the stance ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``
    sets), not the full guard set that re-checks every parameter, which took a quarter of a compiled
    decoding step of a small model on the CPU. Only inside the call (code between steps runs with every
    guard), and only under the default stance (a caller's ``force_eager`` or ``fail_on_recompile``
    stays in force). The loop's model must not be changed between its steps (a KV cache holds its keys).

    Dynamo's stance is swapped directly (``set_stance`` as a context manager costs about 20 us a call);
    a torch without that private state runs every guard, and so does a loop that is itself being traced."""
    if not repeat or _SKIPPING is None or torch.compiler.is_compiling() or _EVAL_FRAME._stance != _DEFAULT:
        return contextlib.nullcontext()
    return _DifferentiatingGuardsOnly()


class RepeatedSteps:
    """The calls of one :func:`compiled_step` in a decoding loop: the first with every guard, the next ones
    inside :func:`repeated_step`. Dynamo refuses (before the fullgraph step runs anything) a call that would
    need a new graph under that stance: another model's graph of the same code ran between two steps (a
    Talker's step between a Thinker's, say), or a shape changed. The call is then made again with every
    guard, and the rest of the loop keeps every guard."""

    def __init__(self, step: Callable[..., Any]) -> None:
        self.step = step
        self.calls = 0
        self.skipping = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1 or not self.skipping:
            return self.step(*args, **kwargs)
        try:
            with repeated_step(True):
                return self.step(*args, **kwargs)
        except RuntimeError as error:
            if "skip_guard_eval_unsafe" not in str(error):
                raise
            self.skipping = False
            return self.step(*args, **kwargs)


_EVAL_FRAME = getattr(torch._dynamo, "eval_frame", None)
_DEFAULT = _SKIPPING = None  # Dynamo's default stance, and the same skipping all but differentiating guards
if hasattr(_EVAL_FRAME, "_stance") and dataclasses.is_dataclass(getattr(_EVAL_FRAME, "DynamoStance", None)):
    _DEFAULT = _EVAL_FRAME.DynamoStance()
    _SKIPPING = dataclasses.replace(_DEFAULT, skip_guard_eval_unsafe=True)


class _DifferentiatingGuardsOnly:
    """Dynamo's stance skips all but the differentiating guards inside the block, then is the default again
    (what ``torch._dynamo.eval_frame._set_stance`` does, less its check against being traced, which
    :func:`repeated_step` makes, and its import of a callback getter: 7 us a call)."""

    def __enter__(self) -> None:
        _EVAL_FRAME._stance = _SKIPPING

    def __exit__(self, *exc: object) -> None:
        _EVAL_FRAME._stance = _DEFAULT
