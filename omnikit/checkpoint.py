"""Checkpoints: ``save_pretrained`` / ``load_pretrained`` with safetensors and a JSON config.

A checkpoint directory holds two files:

- ``config.json``: the registry name and the overrides the model was built with;
- ``model.safetensors``: every tensor of the state dict (tied tensors stored once).

Saving is atomic (temporary files, fsync, rename). Loading is strict and checks before it
allocates: the model is built on ``device="meta"`` and compared with the safetensors header, and a
missing, unexpected, mis-shaped or wrong-dtype tensor raises ``ValueError`` naming the keys;
unreadable files raise ``ValueError`` naming the file. Pickle files (``.bin``, ``.pt``, ``.pth``)
are refused unless ``allow_pickle=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from omnikit.checkpoint_checks import (
    SafetensorsHeader,
    TensorEntry,
    check_against_header,
    check_contained,
    check_finite,
    dtype_name,
    read_safetensors_header,
)
from omnikit.registry import PRETRAINED_HOOKS, SPEC_ATTR, ModelSpec, create_model
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_directory
from omnikit.utils.legacy_keys import legacy_key_renames
from omnikit.utils.precision import cast_model, model_dtype
from omnikit.version import __version__

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "check_fits",
    "load_pretrained",
    "load_weights",
    "load_weights_as_saved",
    "read_config",
    "save_pretrained",
    "write_atomically",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_ALIASES_KEY = "omnikit_aliases"


def _to_json(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v, f"{path}.{k}") for k, v in value.items()}
    raise OmnikitTypeError(
        f"override `{path}` of type {type(value).__name__} cannot be written to config.json; "
        "save_pretrained only records JSON values (numbers, strings, lists, dicts)"
    )


def _from_json(value: Any) -> Any:
    """JSON lists come back as tuples: registry configs use immutable sequences."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _spec_of(model: nn.Module) -> ModelSpec:
    spec = getattr(model, SPEC_ATTR, None)
    if not isinstance(spec, ModelSpec):
        raise OmnikitValueError(
            "`model` was not built by omnikit.create_model, so config.json could not say how to rebuild it; "
            "build it with create_model(name, **overrides) or save its state_dict yourself"
        )
    return spec


def _dedupe_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store tensors that share memory (tied weights) once; return the aliases to restore."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if tensor.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = tensor.detach().contiguous().cpu()
    return unique, aliases


def _crc32(tensors: Mapping[str, torch.Tensor]) -> str:
    """CRC-32 of every tensor's bytes in key order: binds config.json to the weights it was saved with."""
    crc = 0
    for key in sorted(tensors):
        crc = zlib.crc32(key.encode("utf-8"), crc)
        flat = tensors[key].detach().contiguous().reshape(-1)
        if flat.numel():
            crc = zlib.crc32(flat.view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (``mkstemp`` always gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_path(out: Path, name: str) -> Path:
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
    os.close(fd)
    return Path(temp)


def write_atomically(out: Path, writers: Sequence[tuple[str, Callable[[Path], None]]]) -> None:
    """Write each file to a temporary name in ``out``, fsync them all, then rename in order.

    On any failure the temporaries are removed and the files already in ``out`` are untouched.
    Files get the permissions the umask gives (as ``open()`` would), not the temporaries' 0600.
    """
    temps: list[tuple[Path, str]] = []
    mode = _file_mode()
    try:
        for name, write in writers:
            temp = _temp_path(out, name)
            temps.append((temp, name))
            write(temp)
            os.chmod(temp, mode)  # writers (mkstemp, safetensors) create files 0600 whatever the umask
            _fsync(temp)
        for temp, name in temps:
            os.replace(temp, out / name)
    finally:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the renames durable (POSIX)
        _fsync(out)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    try:
        save_file(tensors, str(path), metadata=metadata)
    except OSError:
        raise
    except Exception as exc:  # safetensors reports I/O failures (full disk, size limit) as SafetensorError
        raise OSError(f"could not write {str(path)!r}: {exc}") from exc


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a model built by ``create_model``.

    Each file is written to a temporary name in ``directory``, flushed to disk and renamed over
    the old one, weights first: a save that fails part way (full disk, killed process) leaves the
    previous checkpoint whole and removes its temporaries. ``config.json`` records the model's
    dtype (a bf16 model comes back bf16) and a CRC-32 of the weights, checked on load.
    Returns the directory. Never pickles.
    """
    spec = _spec_of(model)
    out = check_directory(directory, "directory", to_write=True)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if any(t.device.type == "meta" for t in state.values()):
        raise OmnikitValueError("`model` has tensors on device='meta'; materialise it before saving")
    tensors, aliases = _dedupe_shared(state)
    config = {
        "format_version": FORMAT_VERSION,
        "omnikit_version": __version__,
        "name": spec.name,
        "kind": spec.kind,
        "overrides": _to_json(spec.overrides, "overrides"),
        "dtype": dtype_name(model_dtype(model)),
        "weights_crc32": _crc32(tensors),
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    write_atomically(
        out,
        [
            (WEIGHTS_NAME, lambda p: _save_tensors(tensors, p, {_ALIASES_KEY: json.dumps(aliases)})),
            (CONFIG_NAME, lambda p: p.write_text(text, encoding="utf-8")),
        ],
    )
    return out


def _resolve_weights(path: Path) -> Path:
    if path.is_dir():
        candidates = [path / WEIGHTS_NAME] + [path / f"pytorch_model{s}" for s in PICKLE_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in checkpoint directory {str(path)!r}")
        return check_contained(found[0], path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return check_contained(path, path.parent)


def _read_pickle(weights: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if not allow_pickle:
        raise OmnikitValueError(
            f"refusing to load pickle checkpoint {str(weights)!r}: pickle can run arbitrary code. "
            "Convert it to safetensors, or pass allow_pickle=True if you trust its source"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise OmnikitValueError(f"checkpoint file {str(weights)!r} could not be unpickled: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OmnikitValueError(f"checkpoint file {str(weights)!r} does not hold a state dict of tensors")
    return state


def _header(weights: Path, allow_pickle: bool) -> tuple[SafetensorsHeader, dict[str, torch.Tensor] | None]:
    """The checkpoint's header; pickle files must be read whole to know it (returned as the state)."""
    if weights.suffix in PICKLE_SUFFIXES:
        state = _read_pickle(weights, allow_pickle)
        entries = {k: TensorEntry(v.dtype, tuple(v.shape), str(weights)) for k, v in state.items()}
        return SafetensorsHeader(entries, {}), state
    if weights.suffix != ".safetensors":
        raise OmnikitValueError(f"checkpoint expected a .safetensors file but got {str(weights)!r}")
    return read_safetensors_header(weights), None


def _aliases(header: SafetensorsHeader, weights: Path) -> dict[str, str]:
    try:
        aliases = json.loads(header.metadata.get(_ALIASES_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise OmnikitValueError(f"checkpoint file {str(weights)!r} has unreadable {_ALIASES_KEY}: {exc}") from None
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v in header.tensors for k, v in aliases.items()
    ):
        raise OmnikitValueError(f"checkpoint file {str(weights)!r} has {_ALIASES_KEY} naming tensors it lacks")
    return aliases


def _expected(
    state: Mapping[str, torch.Tensor], header: SafetensorsHeader, aliases: Mapping[str, str], saved: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """What the header must hold for ``state`` (meta tensors), tied keys dropped.

    With ``saved`` (the dtype recorded at save), a floating tensor may be stored in that dtype or
    float32 (norms and routers stay fp32) and is then loaded in the stored dtype.
    """
    allowed = {saved, torch.float32}
    expected = {}
    for key, tensor in state.items():
        if key in aliases:
            continue
        stored = header.tensors.get(key)
        dtype = tensor.dtype
        if saved is not None and stored is not None and tensor.is_floating_point() and stored.dtype in allowed:
            dtype = stored.dtype
        expected[key] = torch.empty(tensor.shape, dtype=dtype, device="meta")
    return expected


def _adopt_dtypes(model: nn.Module, expected: Mapping[str, torch.Tensor]) -> None:
    """Give ``model``'s tensors the dtypes the checkpoint stores them in (tied tensors stay tied)."""
    for key, tensor in model.state_dict(keep_vars=True).items():
        want = expected.get(key)
        if want is None or tensor.dtype == want.dtype:
            continue
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if isinstance(tensor, nn.Parameter):
            tensor.data = tensor.data.to(want.dtype)
        else:
            owner._buffers[attr] = tensor.to(want.dtype)


def _load_data(weights: Path, aliases: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The stored tensors under their stored names, aliases (stored names) restored."""
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError or OSError
        raise OmnikitValueError(f"checkpoint file {str(weights)!r} could not be read: {exc}") from None
    for alias, source in aliases.items():
        state[alias] = state[source]
    return state


def _check_crc(
    state: Mapping[str, torch.Tensor], aliases: Mapping[str, str], config: Mapping[str, Any], weights: Path
) -> None:
    """``state`` and ``aliases`` under their stored names (the CRC-32 covers the names as written)."""
    recorded = config.get("weights_crc32")
    if recorded is None:
        return
    actual = _crc32({k: v for k, v in state.items() if k not in aliases})
    if actual != recorded:
        raise OmnikitValueError(
            f"checkpoint file {str(weights)!r} does not match its config.json (weights CRC-32 {actual}, "
            f"config says {recorded}): the data is corrupted or the two files come from different saves"
        )


def _renamed(renames: Mapping[str, str], state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with its stored names replaced by current ones (see :func:`legacy_key_renames`)."""
    return {renames.get(k, k): v for k, v in state.items()}


@dataclass
class _Checked:
    """A checkpoint checked against a model: stored names, plus ``renames`` {stored: current name}."""

    weights: Path
    aliases: dict[str, str]
    expected: dict[str, torch.Tensor]
    pickled: dict[str, torch.Tensor] | None
    renames: dict[str, str]

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors under their stored names (aliases restored)."""
        return self.pickled if self.pickled is not None else _load_data(self.weights, self.aliases)


def _prepare(model_or_meta: nn.Module, path: Path, allow_pickle: bool, saved: torch.dtype | None) -> _Checked:
    """Read the header and check it against the model's state before any data is read; names an
    older layout of the model wrote are read as the current ones (``legacy_state_prefixes``)."""
    weights = _resolve_weights(path)
    header, pickled = _header(weights, allow_pickle)
    aliases = _aliases(header, weights) if pickled is None else {}
    renames = legacy_key_renames(model_or_meta, [*header.tensors, *aliases])
    current = SafetensorsHeader(_renamed(renames, header.tensors), header.metadata)
    current_aliases = {renames.get(k, k): renames.get(v, v) for k, v in aliases.items()}
    expected = _expected(model_or_meta.state_dict(), current, current_aliases, saved)
    check_against_header(expected, current, source=str(weights))
    return _Checked(weights, aliases, expected, pickled, renames)


def load_weights(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> nn.Module:
    """Load a checkpoint's tensors into ``model`` strictly; returns ``model``.

    The header is checked before any data is read: ``ValueError`` names every missing,
    unexpected, mis-shaped and wrong-dtype key (cast the model with ``cast_model`` to the
    checkpoint's dtype first), and any unreadable file.
    """
    checked = _prepare(model, Path(path), allow_pickle, None)
    state = checked.state()
    check_finite(state, f"checkpoint file {str(checked.weights)!r}", inf_allowed=dict(model.named_buffers()))
    model.load_state_dict(_renamed(checked.renames, state), strict=True)
    return model


def _saved_dtype(config: Mapping[str, Any], config_path: Path) -> torch.dtype | None:
    name = config.get("dtype")
    if name is None:
        return None
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OmnikitValueError(f"{str(config_path)!r}: `dtype` expected a floating dtype name but got {name!r}")
    return dtype


def read_config(config_path: Path) -> dict[str, Any]:
    """Read and validate an omnikit ``config.json``; ``ValueError`` naming the file otherwise."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OmnikitValueError(f"{str(config_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        raise OmnikitValueError(f"{str(config_path)!r} is not an omnikit config (format_version {FORMAT_VERSION})")
    checks = (("name", str, True), ("overrides", dict, False), ("weights_crc32", str, False))
    for key, kind, required in checks:
        if (required or key in config) and not isinstance(config.get(key), kind):
            raise OmnikitValueError(
                f"{str(config_path)!r}: `{key}` expected a {kind.__name__} but got {type(config.get(key)).__name__}"
            )
    _saved_dtype(config, config_path)
    return config


def _config_beside(path: Path) -> tuple[dict[str, Any] | None, Path]:
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    return (read_config(config_path) if config_path.is_file() else None), config_path


def check_fits(build_on_meta: Callable[[], nn.Module], path: str | Path, *, allow_pickle: bool = False) -> None:
    """Raise ``ValueError`` unless the checkpoint at ``path`` fits the model ``build_on_meta`` returns.

    Nothing is allocated: the model is built on ``device="meta"`` and compared with the
    safetensors header, so a config asking for a model far larger than its file fails at once.
    """
    path = Path(path)
    config, config_path = _config_beside(path)
    with torch.device("meta"):
        meta = build_on_meta()
    _prepare(meta, path, allow_pickle, _saved_dtype(config or {}, config_path))


def load_weights_as_saved(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> nn.Module:
    """Like :func:`load_weights` for a freshly built model, which first takes the dtype recorded at save.

    With a ``config.json`` beside the weights, its CRC-32 of the weights is checked too.
    """
    path = Path(path)
    config, config_path = _config_beside(path)
    checked = _prepare(model, path, allow_pickle, _saved_dtype(config or {}, config_path))
    _adopt_dtypes(model, checked.expected)
    state = checked.state()
    _check_crc(state, checked.aliases, config or {}, checked.weights)
    check_finite(state, f"checkpoint file {str(checked.weights)!r}", inf_allowed=dict(model.named_buffers()))
    model.load_state_dict(_renamed(checked.renames, state), strict=True)
    return model


PRETRAINED_HOOKS.update(check=check_fits, load=load_weights_as_saved)  # for create_model(..., pretrained=)


def load_pretrained(
    directory: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> nn.Module:
    """Rebuild a model from ``config.json`` and load its weights strictly.

    ``directory`` may also be the weights file itself, with ``config.json`` beside it. The model
    is first built on ``device="meta"`` and checked against the safetensors header, so nothing
    is allocated for a checkpoint that does not fit. Tensors come back in the dtype they were
    saved in (then cast to ``dtype`` when given).
    """
    path = check_directory(directory, "directory")
    config, config_path = _config_beside(path)
    if config is None:
        raise FileNotFoundError(f"no {CONFIG_NAME} next to checkpoint {str(path)!r}")
    if device is not None and torch.device(device).type == "meta":
        raise OmnikitValueError("`device` cannot be 'meta' when loading weights")
    name, overrides = config["name"], _from_json(config.get("overrides", {}))

    def build() -> nn.Module:
        try:
            return create_model(name, **overrides)
        except (KeyError, TypeError, ValueError) as exc:
            raise OmnikitValueError(f"{str(config_path)!r} describes a model that cannot be built: {exc}") from exc

    check_fits(build, path, allow_pickle=allow_pickle)
    model = create_model(name, device=device, **overrides)
    load_weights_as_saved(model, path, allow_pickle=allow_pickle)
    if dtype is not None:
        cast_model(model, dtype)
    return model
