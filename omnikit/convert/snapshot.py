"""Reading a checkpoint directory in the Hugging Face Hub layout, lazily.

A snapshot holds ``config.json`` and either ``model.safetensors`` or shards
``model-0000k-of-0000n.safetensors`` listed by ``model.safetensors.index.json`` (``weight_map``:
tensor name -> shard file). Files may be symlinks into a blob store, as in the Hub cache.

Nothing here reads tensor data: :class:`Snapshot` knows which file holds which tensor, and
:func:`open_shards` opens only the files asked for, returning handles whose headers give shapes
and dtypes before anything is allocated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from omnikit.checkpoint_checks import check_contained
from omnikit.utils.checks import OmnikitValueError

__all__ = ["CONFIG_FILE", "INDEX_FILE", "SINGLE_FILE", "Snapshot", "open_shards", "read_json", "torch_dtype"]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def torch_dtype(safetensors_dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors header dtype string (``"BF16"`` -> ``torch.bfloat16``)."""
    return _DTYPES[safetensors_dtype.upper()]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OmnikitValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise OmnikitValueError(f"{str(path)!r} expected a JSON object but holds {type(data).__name__}")
    return data


def _open(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors raises its own error type for corrupt headers
        raise OmnikitValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from error


def open_shards(files: Iterable[Path]) -> dict[Path, Any]:
    """Open each file once (``safe_open`` handles, memory-mapped; only headers are read)."""
    return {path: _open(path) for path in files}


@dataclass
class Snapshot:
    """A Hub-layout checkpoint directory: its config and where each tensor lives.

    Attributes:
        directory: the snapshot folder.
        config: ``config.json`` as a dict.
        weight_map: tensor name -> file holding it.
    """

    directory: Path
    config: dict[str, Any]
    weight_map: dict[str, Path]

    @classmethod
    def open(cls, path: str | Path) -> Snapshot:
        """Read ``config.json`` and the index (or the single file's header) of ``path``."""
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist")
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in checkpoint directory {str(directory)!r}")
        config = read_json(check_contained(config_path, directory))
        index_path = directory / INDEX_FILE
        if index_path.is_file():
            weight_map = read_json(check_contained(index_path, directory)).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise OmnikitValueError(f"{str(index_path)!r} expected a 'weight_map' of tensor name -> file name")
            files = {v: check_contained(directory / v, directory) for v in set(weight_map.values())}
            return cls(directory, config, {k: files[v] for k, v in weight_map.items()})
        single = directory / SINGLE_FILE
        if not single.is_file():
            raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in checkpoint directory {str(directory)!r}")
        check_contained(single, directory)
        with _open(single) as handle:
            keys = list(handle.keys())
        return cls(directory, config, dict.fromkeys(keys, single))

    def files_for(self, keys: Iterable[str]) -> list[Path]:
        """The files holding ``keys``, in file-name order; a missing file raises naming it."""
        files = sorted({self.weight_map[k] for k in keys})
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"shard {str(path)!r} listed in {INDEX_FILE} does not exist")
        return files
