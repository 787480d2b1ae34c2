"""Validation of hyper-parameter dataclasses: types against the annotations, ranges from one table.

:func:`validate_config` is what :func:`omnikit.registry.configure` runs on every config it
builds, once, before any module exists. It checks

- every field's value against its annotation (``int``, ``float``, ``bool``, ``str``,
  ``X | None``, ``tuple[int, ...]``, ``Literal[...]``, nested dataclasses), so ``depth="2"``
  raises ``TypeError`` naming ``depth``;
- ranges from :data:`RANGE_RULES`, a table keyed by field-name patterns (``*_dim`` > 0,
  ``eps``, ``*_eps`` > 0, ``*dropout*`` in [0, 1) ...), plus a field's own ``metadata={"range": ...}``;
- that every float is finite (NaN and inf are never a hyper-parameter).

A field opts out of the table with ``metadata={"range": None}``. :data:`RELATIONS` adds the
checks between fields (``num_heads`` divides ``dim``, ``top_k <= num_experts`` ...).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["RANGE_RULES", "RELATIONS", "Range", "validate_config"]


@dataclass(frozen=True)
class Range:
    """An interval for a number (or each number of a tuple); ``None`` bounds are open ends."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return self.high is None or value < self.high or (value == self.high and self.high_inclusive)

    def __str__(self) -> str:
        left = "-inf" if self.low is None else f"{self.low:g}"
        right = "inf" if self.high is None else f"{self.high:g}"
        return f"{'[' if self.low_inclusive else '('}{left}, {right}{']' if self.high_inclusive else ')'}"


POSITIVE = Range(0, None, low_inclusive=False)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
PROBABILITY_OPEN_HIGH = Range(0, 1, high_inclusive=False)

#: (field-name patterns, range) in order; the first pattern that matches a field decides.
RANGE_RULES: tuple[tuple[tuple[str, ...], Range], ...] = (
    # counts that may be zero (0 = feature off), offsets and ids
    (("num_experts", "shared_hidden", "expert_hidden", "num_semantic", "sliding_window", "attention_chunk",
      "delays", "*_id", "*_ids", "n_residual", "*_padding", "*_steps"), NON_NEGATIVE),
    # sizes, widths, counts, strides: at least one
    (("dim", "*_dim", "depth", "*_depth", "*_layers", "*heads", "*head_dim", "*mlp_hidden", "vocab_size", "*_vocab",
      "n_*", "num_*", "*_size", "top_k", "stride", "strides", "kernels", "ratios", "channels", "*_channels",
      "in_chans", "patch", "compress", "*_interval", "*_chunks", "*_frames", "*_tokens", "*_clips",
      "max_positions", "fsq_levels", "mrope_sections"), AT_LEAST_ONE),
    # positive reals
    (("eps", "*_eps", "*rope_base", "*theta", "*_rate", "time_unit", "*ratio", "route_scale", "capacity_factor",
      "temperature_floor", "softcap", "*_softcap"), POSITIVE),
    (("*dropout*", "*drop_rate", "*drop_path*"), PROBABILITY_OPEN_HIGH),
    (("*_weight", "*_coef", "*_coeff", "*_scale"), NON_NEGATIVE),
    # sampling settings
    (("temperature",), NON_NEGATIVE),
    (("top_p",), Range(0, 1, low_inclusive=False)),
    (("repetition_penalty",), POSITIVE),
)


def _divides(config: Any, small: str, big: str, unless: str | None = None) -> str | None:
    a, b = getattr(config, small, None), getattr(config, big, None)
    if unless is not None and getattr(config, unless, None) is not None:
        return None
    if isinstance(a, int) and isinstance(b, int) and a > 0 and b % a:
        return f"`{small}` expected a divisor of {big}={b} but got {a}"
    return None


def _at_most(config: Any, small: str, big: str) -> str | None:
    a, b = getattr(config, small, None), getattr(config, big, None)
    if isinstance(a, int) and isinstance(b, int) and b > 0 and a > b:
        return f"`{small}` expected at most {big}={b} but got {a}"
    return None


#: Checks between fields, run when a config has the fields they name.
RELATIONS: tuple[Callable[[Any], str | None], ...] = (
    lambda c: _divides(c, "num_heads", "dim", unless="head_dim"),
    lambda c: _divides(c, "num_kv_heads", "num_heads"),
    lambda c: _at_most(c, "top_k", "num_experts"),
)


def _range_for(field: dataclasses.Field[Any]) -> Range | None:
    if "range" in field.metadata:
        return field.metadata["range"]
    for patterns, rule in RANGE_RULES:
        if any(fnmatch.fnmatchcase(field.name, p) for p in patterns):
            return rule
    return None


def _type_name(hint: Any) -> str:
    """How an annotation reads in an error: a ``Literal`` lists its choices, a union each member."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (unknown annotations accept anything)."""
    if hint is Any or hint is object:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:  # a list is accepted too (JSON and user code write sequences as lists)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    if origin in (list, dict, set, frozenset):
        return isinstance(value, origin)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (tuple, list)):
        return [n for v in value for n in _numbers(v)]
    return []


def validate_config(config: Any, owner: str = "") -> None:
    """Check every field of the dataclass instance ``config``; raise naming the first bad field.

    Raises:
        TypeError: a value that does not fit the field's annotation.
        ValueError: a non-finite float, or a number outside the field's range.
    """
    prefix = f"{owner}: " if owner else ""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        hint = hints.get(field.name, Any)
        if not _matches(value, hint):
            raise OmnikitTypeError(
                f"{prefix}`{field.name}` expected {_type_name(hint)} but got {type(value).__name__} ({value!r})"
            )
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_config(value, f"{owner}.{field.name}" if owner else field.name)
            continue
        numbers = _numbers(value)
        if not all(math.isfinite(n) for n in numbers):
            raise OmnikitValueError(f"{prefix}`{field.name}` expected finite numbers but got {value!r}")
        rule = _range_for(field)
        if rule is not None and not all(rule.contains(n) for n in numbers):
            raise OmnikitValueError(f"{prefix}`{field.name}` expected values in {rule} but got {value!r}")
    for relation in RELATIONS:
        problem = relation(config)
        if problem:
            raise OmnikitValueError(prefix + problem)
