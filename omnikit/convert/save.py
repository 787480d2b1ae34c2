"""``save_hf``: an omnikit model -> the Hub layout transformers' ``from_pretrained`` loads.

The part's key map runs backwards: every omnikit tensor is sliced into the checkpoint tensors it
was made of (fused projections split, stacked experts unstacked). Tensors are written in shards
of at most ``max_shard_size`` bytes with ``model.safetensors.index.json``, or as one
``model.safetensors`` when they fit. Each file is written under a temporary name in the target
directory, flushed to disk and renamed into place; the index comes last, so an interrupted save
never leaves an index pointing at half-written shards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from omnikit.checkpoint import write_atomically
from omnikit.convert.architectures import origin_of
from omnikit.convert.keymap import Piece
from omnikit.convert.load import tied_aliases
from omnikit.convert.snapshot import CONFIG_FILE, INDEX_FILE, SINGLE_FILE
from omnikit.utils.checks import OmnikitValueError, check_directory

__all__ = ["DEFAULT_MAX_SHARD_BYTES", "parse_size", "save_hf"]

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or a string such as ``"5GB"``, ``"200MiB"``, ``"20KB"``."""
    if isinstance(size, int) and size > 0:
        return size
    if isinstance(size, str):
        text = size.strip().upper()
        for unit in sorted(_UNITS, key=len, reverse=True):
            number = text[: -len(unit)].strip()
            if text.endswith(unit) and number.replace(".", "", 1).isdigit():
                return int(float(number) * _UNITS[unit])
    raise OmnikitValueError(f"`max_shard_size` expected bytes > 0 or a string like '5GB' but got {size!r}")


def _write_file(path: Path, write: Callable[[Path], None]) -> None:
    """One file written atomically (temporary name beside it, fsync, rename): see :func:`write_atomically`."""
    write_atomically(path.parent, [(path.name, write)])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_file(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8"))


def _shards(pieces: list[tuple[str, torch.Tensor, Piece]], limit: int) -> list[list[tuple[str, torch.Tensor, Piece]]]:
    shards: list[list[tuple[str, torch.Tensor, Piece]]] = [[]]
    size = 0
    for item in pieces:
        _, tensor, piece = item
        nbytes = math.prod(piece.shape(tensor.shape)) * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes
    return shards


def save_hf(model: nn.Module, path: str | Path, *, max_shard_size: int | str = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write ``model`` to ``path`` in the Hub layout; returns the directory.

    ``model`` is one returned by :func:`load_hf` (its config and part are kept) or one whose
    architecture can export its config (the LM presets). A part alone writes only its tensors,
    under their names in the full checkpoint.
    """
    out = check_directory(path, "path", to_write=True)
    origin, part = origin_of(model)
    limit = parse_size(max_shard_size)
    state = model.state_dict()
    if any(t.device.type == "meta" for t in state.values()):
        raise OmnikitValueError("`model` has tensors on device='meta'; materialise it before saving")
    aliases = tied_aliases(model)
    state = {k: v.detach() for k, v in state.items() if k not in aliases}
    plan = part.key_map(origin.config).prefixed(part.prefix).plan({k: v.shape for k, v in state.items()})
    pieces = [(p.source, state[k], p) for k, ps in plan.items() for p in ps if p.source is not None]
    out.mkdir(parents=True, exist_ok=True)
    shards = _shards(pieces, limit)
    names = (
        [SINGLE_FILE] if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    config = {**origin.config, "architectures": [origin.architecture]}
    _write_json(out / CONFIG_FILE, config)
    weight_map: dict[str, str] = {}
    total = 0
    for name, shard in zip(names, shards):
        tensors = {source: piece.view(tensor).to("cpu", copy=True).contiguous() for source, tensor, piece in shard}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        _write_file(out / name, lambda tmp, t=tensors: save_file(t, str(tmp), metadata={"format": "pt"}))
        weight_map.update(dict.fromkeys(tensors, name))
    stale = [p for p in out.glob("model*.safetensors") if p.name not in names]
    if len(names) > 1:
        _write_json(out / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    else:
        stale.append(out / INDEX_FILE)
    for old in stale:
        old.unlink(missing_ok=True)
    return out
