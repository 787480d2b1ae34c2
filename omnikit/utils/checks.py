"""Input validation with messages that name the argument, what was expected and what came.

Every public forward in omnikit validates its inputs with these helpers so that a user sees
``ValueError: `features` expected shape (B, 80, T) but got (2, 128, 300)`` instead of a bare
shape error from deep inside torch.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = [
    "OmnikitTypeError",
    "OmnikitValueError",
    "check_choice",
    "check_device",
    "check_directory",
    "check_finite",
    "check_ids",
    "check_input",
    "check_int_in_range",
    "check_lengths",
    "check_lengths_or_full",
    "check_positive",
    "check_positive_number",
    "check_tensor",
    "check_weight_dtype",
]


class OmnikitValueError(ValueError):
    """A value (shape, range, option) that omnikit cannot use."""


class OmnikitTypeError(TypeError):
    """An argument of the wrong type, or an unknown keyword argument."""


def _fmt_shape(shape: Iterable[object]) -> str:
    items = [str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def check_tensor(
    x: object,
    name: str,
    *,
    shape: Sequence[int | str | None] | None = None,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    like: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the expected rank, shape and dtype.

    Args:
        x: the value to check.
        name: the argument name, used in the error message.
        shape: expected shape; an int must match exactly, a str (``"B"``, ``"T"``) or ``None``
            matches any size and only documents the dimension.
        ndim: allowed rank(s), when ``shape`` is not given.
        floating: require a floating (True) or an integer/bool (False) dtype.
        dtype: allowed dtype(s).
        like: the module ``x`` is an input of: a dtype of its weights is required (see
            :func:`check_weight_dtype`).

    Returns:
        ``x``, so the call can be inlined.
    """
    if not isinstance(x, torch.Tensor):
        raise OmnikitTypeError(f"`{name}` expected a torch.Tensor but got {type(x).__name__}")
    if shape is not None:
        if x.ndim != len(shape) or any(
            isinstance(s, int) and x.shape[i] != s for i, s in enumerate(shape)
        ):
            # formatted only on error: str() of a traced size breaks the graph
            expected = _fmt_shape("*" if s is None else s for s in shape)
            raise OmnikitValueError(f"`{name}` expected shape {expected} but got {_fmt_shape(x.shape)}")
    elif ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise OmnikitValueError(
                f"`{name}` expected a {want} tensor but got {x.ndim}-D with shape {_fmt_shape(x.shape)}"
            )
    if floating is True and not x.is_floating_point():
        raise OmnikitTypeError(f"`{name}` expected a floating-point tensor but got {x.dtype}")
    if floating is False and x.is_floating_point():
        raise OmnikitTypeError(f"`{name}` expected an integer tensor but got {x.dtype}")
    if dtype is not None:
        allowed_dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed_dtypes:
            raise OmnikitTypeError(f"`{name}` expected dtype in {list(allowed_dtypes)} but got {x.dtype}")
    if like is not None:
        check_weight_dtype(x, name, like)
    return x


def check_lengths(lengths: object, name: str, *, batch: int, max_len: int, of: str | None = None) -> torch.Tensor:
    """Check a per-item valid-length vector: integer, shape (batch,), values in [1, max_len].

    ``of`` names the tensor whose time axis the lengths count: an empty axis (``max_len == 0``)
    is then blamed on it, not on ``lengths``. The range needs the values: eager only (skipped
    while compiling or exporting, where the shape and dtype are still checked).
    """
    _check_steps(of, max_len)
    t = check_tensor(lengths, name, shape=(batch,), floating=False)
    if t.dtype == torch.bool:
        raise OmnikitTypeError(f"`{name}` expected an integer tensor of lengths but got a bool tensor")
    if not torch.compiler.is_compiling() and t.numel():
        lo, hi = _min_max(t)
        if lo < 1 or hi > max_len:
            raise OmnikitValueError(
                f"`{name}` expected values in [1, {max_len}] (the padded length) but got min {lo}, max {hi}"
            )
    return t.long()


def _check_steps(of: str | None, max_len: int) -> None:
    """Blame an empty time axis on the tensor ``of`` names (nothing when ``of`` is ``None``)."""
    if of is not None and max_len < 1:
        raise OmnikitValueError(f"`{of}` expected at least one step along its time axis but got none")


def check_lengths_or_full(
    lengths: object, x: torch.Tensor, *, axis: int = 1, of: str | None = None, name: str = "lengths"
) -> torch.Tensor:
    """Valid steps per item ``(B,)`` int64 along ``axis`` of the batch ``x (B, ...)``, on ``x``'s device:
    ``lengths`` checked by :func:`check_lengths`, or every step of every item when ``None`` (no host
    read then; an empty axis is still blamed on ``of``)."""
    batch, max_len = x.shape[0], x.shape[axis]
    if lengths is None:
        _check_steps(of, max_len)
        return torch.full((batch,), max_len, dtype=torch.long, device=x.device)
    return check_lengths(lengths, name, batch=batch, max_len=max_len, of=of).to(x.device)


def _min_max(t: torch.Tensor) -> tuple[int, int]:
    """The smallest and largest value of integer ``t`` (non-empty), in one host read."""
    lo, hi = torch.stack(torch.aminmax(t)).tolist()
    return lo, hi


def check_choice(value: object, name: str, choices: Iterable[object]) -> None:
    """Raise if ``value`` is not one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise OmnikitValueError(f"`{name}` expected one of {options} but got {value!r}")


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a positive (or non-negative) int."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise OmnikitTypeError(f"`{name}` expected an int but got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise OmnikitValueError(f"`{name}` expected an int {bound} but got {value}")


def check_input(
    x: object,
    name: str,
    module: torch.nn.Module,
    *,
    shape: Sequence[int | str | None] | None = None,
    ndim: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """A floating input at a model's public entry: a tensor of the expected rank or shape, in a
    dtype the module's weights have (unless autocast is on), finite (eager mode).

    Inputs whose padding may legitimately hold NaN (audio features) check their valid part
    themselves instead.
    """
    x = check_tensor(x, name, shape=shape, ndim=ndim, floating=True, like=module)
    check_finite(x, name)
    return x


def check_weight_dtype(x: torch.Tensor, name: str, module: torch.nn.Module) -> None:
    """``TypeError`` unless floating ``x`` has a dtype of ``module``'s first weights (autocast exempt):
    a float64 batch for a float32 model fails with this message, not deep inside a matmul."""
    if torch.compiler.is_compiling():  # a mismatch fails while tracing anyway; no parameter walk in graphs
        return
    weights = {p.dtype for p in itertools.islice(module.parameters(), 8) if p.is_floating_point()}
    if weights and x.dtype not in weights and not torch.is_autocast_enabled(x.device.type):
        expected = " or ".join(sorted(str(d) for d in weights))
        raise OmnikitTypeError(f"`{name}` expected dtype {expected} (the model's weights) but got {x.dtype}; "
                               "cast the input or the model")


def check_directory(value: object, name: str, *, to_write: bool = False) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``; ``to_write``: it must not be an existing file
    (a folder is written there)."""
    if not isinstance(value, (str, os.PathLike)):
        raise OmnikitTypeError(f"`{name}` expected a folder path (str or os.PathLike) but got {type(value).__name__}")
    path = Path(value)
    if to_write and path.exists() and not path.is_dir():
        raise OmnikitValueError(f"`{name}` expected a folder to write into but {str(path)!r} is a file")
    return path


def check_device(value: object, name: str = "device") -> torch.device:
    """``value`` (a ``torch.device`` or its name) as a ``torch.device``."""
    try:
        return torch.device(value)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as err:
        raise OmnikitValueError(f"`{name}` expected a torch.device or a name like 'cpu' or 'cuda:0' but got "
                                f"{value!r}") from err


def check_positive_number(value: object, name: str) -> float:
    """``value`` as a float after checking it is a finite number > 0 (a rate, a duration, a scale)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise OmnikitTypeError(f"`{name}` expected a number but got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise OmnikitValueError(f"`{name}` expected a finite number > 0 but got {value!r}")
    return float(value)


def check_finite(x: torch.Tensor, name: str, consequence: str = "") -> None:
    """Raise ``OmnikitValueError`` if ``x`` holds NaN or inf (eager only: skipped while compiling).

    A host synchronisation: call it once at a public entry point, never per token.
    """
    if torch.compiler.is_compiling() or not x.numel() or bool(torch.isfinite(x.sum())):
        return  # a finite sum means no NaN/inf (they propagate); only an overflowing sum looks closer
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        extra = f"; {consequence}" if consequence else ""
        raise OmnikitValueError(f"`{name}` expected finite values but got {bad} NaN/inf of {x.numel()}{extra}")


def check_ids(
    ids: object, name: str, high: int, *, low: int = 0, what: str = "values", sync: bool = True,
    ndim: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Check an integer tensor of ids or codes (of rank ``ndim`` when given) lies in ``[low, high)`` (it indexes
    an embedding).

    The range needs the values: eager only (skipped while compiling), one host synchronisation
    for min and max together; call it at a public entry point. Inside a generation loop pass
    ``sync=False``: on an accelerator the check is then queued (``torch._assert_async``) instead
    of waiting for the values, so it never stalls a step (the error is a device assert).
    """
    t = check_tensor(ids, name, ndim=ndim, floating=False)
    if t.dtype == torch.bool:
        raise OmnikitTypeError(f"`{name}` expected an integer tensor of {what} but got a bool tensor")
    if torch.compiler.is_compiling() or not t.numel():
        return t
    if not sync and t.device.type != "cpu":
        torch._assert_async(((t >= low) & (t < high)).all(), f"`{name}` expected {what} in [{low}, {high})")
        return t
    lo, hi = _min_max(t)
    if lo < low or hi >= high:
        raise OmnikitValueError(f"`{name}` expected {what} in [{low}, {high}) but got min {lo}, max {hi}")
    return t


def check_int_in_range(value: object, name: str, low: int, high: int | None = None) -> int:
    """Raise unless ``value`` is an int in ``[low, high)`` (``high=None``: no upper bound)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise OmnikitTypeError(f"`{name}` expected an int but got {type(value).__name__} ({value!r})")
    if value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise OmnikitValueError(f"`{name}` expected an int in {bound} but got {value}")
    return value
