"""``load_hf``: a published Hub-layout checkpoint -> the omnikit model, tensor by tensor.

Steps: read ``config.json`` and the index; pick the architecture and part; build the model with
parameters on the meta device; expand the part's key map over the model's keys; check that the
checkpoint names and the shapes in the safetensors headers are exactly those needed (before
allocating anything); then read the needed shards one after the other, copying each tensor into
its place (cast to the target dtype, on the target device) and load with
``load_state_dict(assign=True)``. Peak memory is the loaded model plus one checkpoint tensor.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from omnikit.checkpoint_checks import check_finite
from omnikit.convert.architectures import HF_ORIGIN_ATTR, HubOrigin, Part, get_architecture
from omnikit.convert.configmap import MissingConfigKey
from omnikit.convert.empty_init import meta_parameters
from omnikit.convert.keymap import KeyMap, Piece
from omnikit.convert.snapshot import Snapshot, open_shards, torch_dtype
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_device, check_directory
from omnikit.utils.config_checks import validate_config
from omnikit.utils.precision import cast_model

__all__ = ["PROGRESS_MIN_BYTES", "architecture_name", "build_hf", "load_hf", "tied_aliases"]

#: Loads of at least this many bytes show a progress bar (one step per shard).
PROGRESS_MIN_BYTES = 2**30


def architecture_name(config: Mapping[str, Any], source: str) -> str:
    """The first entry of ``config["architectures"]``; ``ValueError`` naming ``source`` otherwise."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise OmnikitValueError(f"{source}: config.json expected an 'architectures' list but got {names!r}")
    return names[0]


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: first name}`` of parameters registered under several names (tied weights)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def assign_state(model: nn.Module, state: dict[str, torch.Tensor], aliases: dict[str, str]) -> None:
    """Load ``state`` (without the alias names) into ``model`` by assignment (strict), then tie every
    ``{alias: first name}`` of :func:`tied_aliases` again (assignment replaced the shared parameter)."""
    model.load_state_dict({**state, **{a: state[s] for a, s in aliases.items()}}, strict=True, assign=True)
    for alias, source in aliases.items():
        owner, _, attr = alias.rpartition(".")
        src_owner, _, src_attr = source.rpartition(".")
        setattr(model.get_submodule(owner), attr, getattr(model.get_submodule(src_owner), src_attr))


def _problems(label: str, keys: list[str]) -> str:
    return f"{label} ({len(keys)}): {keys[:20]}{' ...' if len(keys) > 20 else ''}"


def _check_names(
    needed: set[str], snapshot: Snapshot, part: Part, key_map: KeyMap, part_name: str
) -> None:
    owned = {k for k in snapshot.weight_map if k.startswith(part.owned_prefixes)}
    missing = sorted(needed - set(snapshot.weight_map))
    unexpected = sorted(k for k in owned - needed if not key_map.skipped(k))
    problems = [_problems(label, keys) for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if problems:
        raise OmnikitValueError(
            f"checkpoint {str(snapshot.directory)!r} (part {part_name!r}) does not fit the model its config.json "
            "describes: " + "; ".join(problems)
        )


def _check_shapes(plan: Mapping[str, list[Piece]], shapes: Mapping[str, torch.Size], headers: Mapping[str, Any],
                  directory: Path) -> None:
    wrong = sorted(
        f"{piece.source}: checkpoint {tuple(headers[piece.source].get_shape())} vs model {piece.shape(shapes[key])}"
        for key, pieces in plan.items()
        for piece in pieces
        if piece.source is not None and tuple(headers[piece.source].get_shape()) != piece.shape(shapes[key])
    )
    if wrong:
        raise OmnikitValueError(
            f"checkpoint {str(directory)!r} does not fit the model its config.json describes: "
            f"{_problems('mis-shaped', wrong)}"
        )


def _dtype_kind(dtype: torch.dtype) -> str:
    return "floating" if dtype.is_floating_point else "complex" if dtype.is_complex else "integer or bool"


def _check_dtypes(plan: Mapping[str, list[Piece]], dtypes: Mapping[str, torch.dtype], headers: Mapping[str, Any],
                  directory: Path) -> None:
    """Refuse a tensor stored as another kind of number than the model holds (an int32 embedding would
    otherwise be cast silently); floating precisions convert freely (bf16 -> float32)."""
    wrong = sorted(
        f"{piece.source}: checkpoint {torch_dtype(headers[piece.source].get_dtype())} vs model {dtypes[key]}"
        for key, pieces in plan.items()
        for piece in pieces
        if piece.source is not None
        and _dtype_kind(torch_dtype(headers[piece.source].get_dtype())) != _dtype_kind(dtypes[key])
    )
    if wrong:
        raise OmnikitValueError(
            f"checkpoint {str(directory)!r} does not fit the model: {_problems('wrong dtype', wrong)}"
        )


def _header(handle: Any, name: str, path: Path) -> Any:
    """The safetensors slice (header only) of ``name``; ``ValueError`` when the file lacks it."""
    try:
        return handle.get_slice(name)
    except Exception as error:  # safetensors' own error type for an absent tensor
        raise OmnikitValueError(f"{str(path)!r} does not hold tensor {name!r} that the index lists") from error


def _default_dtype(headers: Mapping[str, Any]) -> torch.dtype:
    """The floating dtype most tensors are stored in (float32 when none is floating)."""
    counts = Counter(torch_dtype(h.get_dtype()) for h in headers.values())
    floating = [dtype for dtype, _ in counts.most_common() if dtype.is_floating_point]
    return floating[0] if floating else torch.float32


#: Byte alignment of loaded stacked (3-D and more: MoE experts) tensors: a memory-mapped safetensors
#: tensor starts on an 8-byte boundary, which torch's grouped GEMM refuses.
ALIGNMENT = 64


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or for a stacked (``ndim >= 3``) tensor whose data does not start on :data:`ALIGNMENT`
    bytes an aligned copy. Vectors and matrices stay where the file maps them (linear layers run at the
    same speed on them, and copying a third of a checkpoint into fresh memory made a warm load several
    times slower than transformers')."""
    return tensor if tensor.ndim < 3 or tensor.data_ptr() % ALIGNMENT == 0 else tensor.clone()


def _read(plan: dict[str, list[Piece]], model: nn.Module, handles: Mapping[Path, Any],
          by_file: Mapping[Path, list[str]], device: torch.device, total_bytes: int) -> dict[str, torch.Tensor]:
    """Materialise every planned omnikit tensor, reading the shards in order."""
    targets = {k: v for k, v in model.state_dict(keep_vars=True).items() if k in plan}
    users: dict[str, list[tuple[str, Piece]]] = {}
    for key, pieces in plan.items():
        for piece in pieces:
            users.setdefault(piece.source or "", []).append((key, piece))
    state: dict[str, torch.Tensor] = {}

    def destination(key: str) -> torch.Tensor:
        if key not in state:
            meta = targets[key]
            state[key] = torch.empty(meta.shape, dtype=meta.dtype, device=device)
            if any(p.source is None for p in plan[key]):
                state[key].zero_()
        return state[key]

    with tqdm(total=len(handles), desc="load_hf", unit="shard", disable=total_bytes < PROGRESS_MIN_BYTES) as bar:
        for path, handle in handles.items():
            for name in by_file[path]:
                tensor = handle.get_tensor(name)
                for key, piece in users[name]:
                    if not piece.index and len(plan[key]) == 1:
                        state[key] = _aligned(tensor.to(device=device, dtype=targets[key].dtype))
                    else:
                        piece.view(destination(key)).copy_(tensor)
                del tensor
            bar.update(1)
    for key in plan:
        destination(key)  # parts made only of zeros
    return state


#: Loads whose tensors :func:`check_finite` has passed in this process: the part, dtype, device and the
#: identity of every file read (see :func:`_file_identity`). Loading the same unchanged files the same
#: way again gives the same tensors, so a second load skips the check (one pass over every weight,
#: the only reason it would read weights that stay memory-mapped).
_VERIFIED: set[tuple[Any, ...]] = set()


def _file_identity(path: Path, stat: os.stat_result) -> tuple[str, int, int, int, int]:
    """``(resolved path, device, inode, size, modification time in ns)``: a rewritten file differs."""
    return str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _build(spec: Any, config: Mapping[str, Any], architecture: str, part: str, where: str) -> nn.Module:
    """``spec``'s module of ``config``; a value the module refuses or a key it lacks is reported as the
    config's, with the architecture and part it was built for."""
    try:
        model = spec.build(config)
        for module in model.modules():  # the configs a config.json gave, checked as create_model checks its own
            if dataclasses.is_dataclass(getattr(module, "config", None)):
                validate_config(module.config, type(module).__name__)
        return model
    except (KeyError, MissingConfigKey) as err:
        key = err.key if isinstance(err, MissingConfigKey) else err.args[0]
        raise OmnikitValueError(
            f"{where} lacks the key {key!r} that part {part!r} of {architecture} needs (a snapshot that "
            f"save_hf wrote of one part loads with `part` naming that part)") from err
    except (ValueError, TypeError) as err:
        if "config.json" in str(err) or "`config`" in str(err):
            raise
        error = OmnikitTypeError if isinstance(err, TypeError) else OmnikitValueError
        raise error(f"{where} does not build part {part!r} of {architecture}: {err}") from err


def build_hf(config: Mapping[str, Any], *, part: str | None = None) -> nn.Module:
    """The model (or ``part``) of a ``config.json`` dict with freshly initialised weights, built as :func:`load_hf`
    builds it before reading a checkpoint: :func:`save_hf` writes it as a snapshot (a random checkpoint for a
    test or an offline example, without transformers)."""
    if not isinstance(config, Mapping):
        raise OmnikitTypeError(f"`config` expected a config.json dict but got {type(config).__name__}")
    config = dict(config)
    architecture = get_architecture(architecture_name(config, "`config`"))
    part_name, spec = architecture.part(part)
    model = _build(spec, config, architecture.name, part_name, "`config`")
    setattr(model, HF_ORIGIN_ATTR, HubOrigin(architecture.name, part_name, config))
    return model.eval()


def load_hf(
    path: str | Path,
    *,
    part: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The omnikit model (or one ``part`` of it) of the Hub-layout checkpoint at ``path``.

    Args:
        path: a directory with ``config.json`` and ``model.safetensors`` or sharded
            ``model-*.safetensors`` with ``model.safetensors.index.json`` (symlinks allowed).
        part: component to load alone (see :func:`omnikit.convert.supported_architectures` and
            ``docs/checkpoints.md``); only the shards holding it are opened.
        device: where the tensors go (default CPU); never ``"meta"``.
        dtype: floating dtype of the model (modules marked ``keep_fp32`` stay float32); default:
            the dtype most checkpoint tensors are stored in.

    Raises:
        ValueError: unsupported architecture (naming it and the supported ones), unknown part,
            missing / unexpected / mis-shaped tensors or tensors of another kind of number than the
            model holds (integer where it holds floats; naming the keys), corrupt JSON or
            safetensors (naming the file).
    """
    check_directory(path, "path")
    device = check_device("cpu" if device is None else device)
    if device.type == "meta":
        raise OmnikitValueError("`device` cannot be 'meta' when loading weights")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise OmnikitValueError(f"`dtype` expected a floating torch.dtype but got {dtype!r}")
    snapshot = Snapshot.open(path)
    architecture = get_architecture(architecture_name(snapshot.config, str(snapshot.directory)))
    part_name, spec = architecture.part(part)
    with meta_parameters():
        model = _build(spec, snapshot.config, architecture.name, part_name,
                       f"config.json of {str(snapshot.directory)!r}")
    aliases = tied_aliases(model)
    meta_state = {k: v for k, v in model.state_dict().items() if k not in aliases}
    shapes = {k: v.shape for k, v in meta_state.items()}
    key_map = spec.key_map(snapshot.config).prefixed(spec.prefix)
    stored = key_map.current_names(snapshot.weight_map)
    plan = {
        key: [replace(p, source=stored.get(p.source, p.source)) for p in pieces]
        for key, pieces in key_map.plan(shapes).items()
    }
    needed = {p.source for pieces in plan.values() for p in pieces if p.source is not None}
    _check_names(needed, snapshot, spec, key_map, part_name)
    handles = open_shards(snapshot.files_for(needed))
    by_file: dict[Path, list[str]] = {path: [] for path in handles}
    for name in sorted(needed):
        by_file[snapshot.weight_map[name]].append(name)
    headers = {name: _header(handles[path], name, path) for path, names in by_file.items() for name in names}
    _check_shapes(plan, shapes, headers, snapshot.directory)
    _check_dtypes(plan, {k: v.dtype for k, v in meta_state.items()}, headers, snapshot.directory)
    model_dtype = dtype or _default_dtype(headers)
    cast_model(model, model_dtype)
    stats = {path: path.stat() for path in handles}
    state = _read(plan, model, handles, by_file, device, sum(st.st_size for st in stats.values()))
    verified = (part_name, model_dtype, device, *sorted(_file_identity(path, st) for path, st in stats.items()))
    if verified not in _VERIFIED:
        check_finite(state, f"checkpoint {str(snapshot.directory)!r}", inf_allowed=dict(model.named_buffers()))
        _VERIFIED.add(verified)
    assign_state(model, state, aliases)
    model.to(device)
    if spec.finish is not None:
        spec.finish(model, snapshot.directory)
    setattr(model, HF_ORIGIN_ATTR, HubOrigin(architecture.name, part_name, snapshot.config))
    return model.eval()
