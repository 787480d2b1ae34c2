"""Checks that run on a safetensors *header* before any tensor memory is taken.

A safetensors file starts with an 8-byte little-endian header size and a JSON header that gives,
for every tensor, its dtype, shape and byte range. :func:`read_safetensors_header` parses and
validates that header (a few kilobytes) without touching the data; :func:`check_against_header`
compares it with what a model expects, typically the ``state_dict()`` of the model built on
``device="meta"``. Together they refuse a checkpoint that does not fit the model in milliseconds,
whatever the sizes involved. Both raise ``OmnikitValueError`` naming the file and the keys.

Loaders of other layouts (the Hub's sharded ``model-0000k-of-0000n.safetensors``) read each
shard's header and merge them with :func:`merge_headers` before calling
:func:`check_against_header`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = [
    "SAFETENSORS_DTYPES",
    "SafetensorsHeader",
    "TensorEntry",
    "check_against_header",
    "check_contained",
    "check_finite",
    "dtype_name",
    "merge_headers",
    "read_safetensors_header",
]

def check_contained(path: Path, directory: Path) -> Path:
    """``path`` itself, after checking that it (or the file a symlink points to) lies inside the checkpoint.

    Inside means under ``directory`` once links are resolved, or, for a Hub-cache snapshot
    (``<repo>/snapshots/<revision>/``), under ``<repo>/`` whose ``blobs/`` the snapshot's links point
    into. A link or an index entry escaping that folder raises ``ValueError`` naming both paths: a
    checkpoint must not read files it does not own.
    """
    root = directory.resolve()
    store = root.parent.parent if root.parent.name == "snapshots" else root
    target = path.resolve()
    if not target.is_relative_to(store):
        raise OmnikitValueError(
            f"checkpoint file {str(path)!r} resolves to {str(target)!r}, outside the checkpoint folder "
            f"{str(store)!r}; links may only point inside it (or into a Hub-cache snapshot's own blobs/)"
        )
    return path


def check_finite(tensors: Mapping[str, torch.Tensor], source: str, *, inf_allowed: Iterable[str] = ()) -> None:
    """``ValueError`` naming the floating tensors of ``tensors`` that hold NaN, or inf outside
    ``inf_allowed`` (buffers such as clipping bounds, which are +-inf when unclipped)."""
    allowed = set(inf_allowed)
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not _all_finite(v, k in allowed))
    if bad:
        raise OmnikitValueError(
            f"{source}: {len(bad)} tensor(s) hold NaN or inf: {bad[:10]}{' ...' if len(bad) > 10 else ''}"
        )


def _all_finite(tensor: torch.Tensor, inf_allowed: bool) -> bool:
    """No NaN in floating ``tensor`` (and no inf unless ``inf_allowed``).

    A finite sum proves it in one pass without a temporary (a NaN or an inf element makes the sum
    NaN or infinite whatever the order of summation): a loaded checkpoint is checked at memory speed
    (``isfinite(x).all()`` writes a bool per element, about 100x slower on a bf16 checkpoint). Only
    a sum that is not finite (a bad element, an inf that is allowed, or finite values whose sum
    overflows) is followed by the element-wise check, which then decides."""
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool((~torch.isnan(tensor) if inf_allowed else torch.isfinite(tensor)).all())


#: safetensors dtype codes -> torch dtypes (those torch has).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself applies


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    file: str


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header of one or more safetensors files."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name stored in config files)."""
    return str(dtype).removeprefix("torch.")


def _bad(path: Path, what: str) -> OmnikitValueError:
    return OmnikitValueError(f"checkpoint file {str(path)!r} is not a valid safetensors file: {what}")


def _entry(path: Path, key: str, raw: object, data_size: int) -> tuple[TensorEntry, tuple[int, int]]:
    if not isinstance(raw, dict) or not {"dtype", "shape", "data_offsets"} <= set(raw):
        raise _bad(path, f"entry {key!r} lacks dtype/shape/data_offsets")
    code, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if code not in SAFETENSORS_DTYPES:
        raise _bad(path, f"entry {key!r} has unsupported dtype {code!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise _bad(path, f"entry {key!r} has shape {shape!r}, expected a list of non-negative ints")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise _bad(path, f"entry {key!r} has data_offsets {offsets!r} outside the {data_size}-byte data section")
    dtype = SAFETENSORS_DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise _bad(path, f"entry {key!r} spans {offsets[1] - offsets[0]} bytes but {code}{shape} needs {nbytes}")
    return TensorEntry(dtype, tuple(shape), str(path)), (offsets[0], offsets[1])


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and validate the header of ``path`` without reading tensor data.

    Checks the header size, the JSON, every entry's dtype, shape and byte range (inside the file,
    of the size its dtype and shape need, not overlapping). Raises ``OmnikitValueError`` naming
    the file on any problem.
    """
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _bad(path, f"file is {file_size} bytes, shorter than the 8-byte header size")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(_MAX_HEADER_BYTES, file_size - 8):
            raise _bad(path, f"header size {header_size} exceeds the file ({file_size} bytes)")
        raw_header = f.read(header_size)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(path, "__metadata__ must map strings to strings")
    data_size = file_size - 8 - header_size
    tensors: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for key, raw in header.items():
        tensors[key], (start, end) = _entry(path, key, raw, data_size)
        spans.append((start, end, key))
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise _bad(path, f"entries {first!r} and {second!r} overlap")
    return SafetensorsHeader(tensors, dict(metadata))


def merge_headers(headers: Iterable[SafetensorsHeader]) -> SafetensorsHeader:
    """Merge the headers of shards; a key stored in two shards raises ``OmnikitValueError``."""
    tensors: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    for header in headers:
        for key, entry in header.tensors.items():
            if key in tensors:
                raise OmnikitValueError(f"tensor {key!r} is stored twice: in {tensors[key].file!r} and {entry.file!r}")
            tensors[key] = entry
        metadata.update(header.metadata)
    return SafetensorsHeader(tensors, metadata)


def _listing(label: str, items: list[str]) -> str:
    return f"{label} ({len(items)}): {items[:20]}{' ...' if len(items) > 20 else ''}"


def check_against_header(
    expected: Mapping[str, torch.Tensor],
    header: SafetensorsHeader | Mapping[str, TensorEntry],
    *,
    source: str,
    check_dtype: bool = True,
) -> None:
    """Raise ``OmnikitValueError`` unless ``header`` holds exactly the tensors ``expected`` describes.

    Args:
        expected: name -> tensor of the wanted shape and dtype (a ``state_dict()`` of a model built
            on ``device="meta"`` costs no memory).
        header: from :func:`read_safetensors_header` (or :func:`merge_headers`), or its ``tensors``.
        source: what to name in the message (the file or directory).
        check_dtype: also refuse tensors whose dtype differs from the expected one.

    The message names every missing, unexpected, mis-shaped and wrong-dtype key.
    """
    stored = header.tensors if isinstance(header, SafetensorsHeader) else header
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    common = sorted(set(stored) & set(expected))
    misshaped = [
        f"{k}: checkpoint {stored[k].shape} vs model {tuple(expected[k].shape)}"
        for k in common
        if stored[k].shape != tuple(expected[k].shape)
    ]
    wrong_dtype = [
        f"{k}: checkpoint {dtype_name(stored[k].dtype)} vs model {dtype_name(expected[k].dtype)}"
        for k in common
        if check_dtype and stored[k].dtype != expected[k].dtype
    ]
    problems = [
        _listing(label, keys)
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped", misshaped),
            ("wrong dtype", wrong_dtype),
        )
        if keys
    ]
    if problems:
        raise OmnikitValueError(f"checkpoint {source!r} does not fit the model: " + "; ".join(problems))
