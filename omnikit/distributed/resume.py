"""What a training run needs besides the weights to resume: scheduler state, ``extra`` values (step,
data position, RNG states), as JSON without pickle, and the RNG states of the process.

A value of ``extra`` may be a ``bool``/``int``/``float``/``str``/``None``, a list, a tuple, a dict with
``str`` keys, a ``torch.Tensor`` (an RNG state, a ``torch.Generator``'s ``get_state()``) or a numpy
array (numpy's RNG state), nested freely; each comes back with its type, dtype and bits.
:func:`rng_state` / :func:`set_rng_state` capture and restore Python's, numpy's and torch's
(CPU and CUDA) generators, so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from typing import Any

import torch

from omnikit.utils.checks import OmnikitTypeError

__all__ = ["decode_state", "encode_state", "rng_state", "set_rng_state"]

_TUPLE, _TENSOR, _ARRAY = "__omnikit_tuple__", "__omnikit_tensor__", "__omnikit_ndarray__"


def _bytes_of(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return base64.b64encode(flat.view(torch.uint8).numpy().tobytes()).decode("ascii")


def encode_state(value: Any, name: str = "extra") -> Any:
    """``value`` as JSON-ready data; tensors and numpy arrays keep dtype, shape and bits exactly.
    Anything else raises ``OmnikitTypeError`` naming where in ``value`` it is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return {_TENSOR: {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                          "data": _bytes_of(value)}}
    if type(value).__module__ == "numpy" and hasattr(value, "dtype"):
        if value.dtype.kind not in "biuf":
            raise OmnikitTypeError(f"`{name}` holds a numpy array of dtype {value.dtype}; expected numbers")
        if value.ndim == 0:  # a numpy scalar
            return value.item()
        data = base64.b64encode(value.tobytes()).decode("ascii")
        return {_ARRAY: {"dtype": value.dtype.str, "shape": list(value.shape), "data": data}}
    if isinstance(value, tuple):
        return {_TUPLE: [encode_state(v, f"{name}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str) or k.startswith("__omnikit_")]
        if bad:
            raise OmnikitTypeError(f"`{name}` expected str keys (not starting with '__omnikit_') but got {bad[0]!r}")
        return {k: encode_state(v, f"{name}[{k!r}]") for k, v in value.items()}
    raise OmnikitTypeError(
        f"`{name}` expected JSON values, tuples, tensors or numpy arrays but got {type(value).__name__}")


def decode_state(data: Any) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(data, list):
        return [decode_state(v) for v in data]
    if not isinstance(data, dict):
        return data
    if _TUPLE in data:
        return tuple(decode_state(v) for v in data[_TUPLE])
    if _TENSOR in data:
        spec = data[_TENSOR]
        raw = bytearray(base64.b64decode(spec["data"]))
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return flat.view(getattr(torch, spec["dtype"])).reshape(spec["shape"]).clone()
    if _ARRAY in data:
        import numpy as np

        spec = data[_ARRAY]
        flat = np.frombuffer(base64.b64decode(spec["data"]), dtype=np.dtype(spec["dtype"]))
        return flat.reshape(spec["shape"]).copy()
    return {k: decode_state(v) for k, v in data.items()}


def dumps(values: Mapping[str, Any]) -> str:
    """``{name: value}`` as JSON text, each value through :func:`encode_state` under its own name
    (floats round-trip exactly)."""
    data = {name: encode_state(value, name) for name, value in values.items()}
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n"


def loads(text: str) -> Any:
    return decode_state(json.loads(text))


def rng_state() -> dict[str, Any]:
    """This process's generators: ``python``, ``torch`` (CPU), ``cuda`` (every device, when CUDA is
    initialised) and ``numpy`` (when numpy is installed); store it in ``extra``."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # numpy is optional
        return state
    state["numpy"] = np.random.get_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (the generators it holds)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
