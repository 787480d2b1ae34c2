"""Checkpoints: ``save_pretrained`` / ``load_pretrained`` with safetensors and a JSON config.

A checkpoint directory holds two files:

- ``config.json``: the registry name and the overrides the model was built with;
- ``model.safetensors``: every tensor of the state dict (tied tensors stored once).

Loading is strict: a missing, unexpected or mis-shaped tensor raises ``ValueError`` naming the
keys. Pickle files (``.bin``, ``.pt``, ``.pth``) are refused unless ``allow_pickle=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from omnikit.registry import SPEC_ATTR, WEIGHTS_LOADER, ModelSpec, create_model
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_pretrained", "load_weights", "save_pretrained"]

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


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for a model built by ``create_model``.

    Returns the directory. Never pickles.
    """
    spec = _spec_of(model)
    out = Path(directory)
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
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={_ALIASES_KEY: json.dumps(aliases)})
    return out


def _resolve_weights(path: Path) -> Path:
    if path.is_dir():
        candidates = [path / WEIGHTS_NAME] + [path / f"pytorch_model{s}" for s in PICKLE_SUFFIXES]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(f"no {WEIGHTS_NAME} in checkpoint directory {str(path)!r}")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return path


def _read_state(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    weights = _resolve_weights(path)
    if weights.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise OmnikitValueError(
                f"refusing to load pickle checkpoint {str(weights)!r}: pickle can run arbitrary code. "
                "Convert it to safetensors, or pass allow_pickle=True if you trust its source"
            )
        return torch.load(weights, map_location="cpu", weights_only=True)
    if weights.suffix != ".safetensors":
        raise OmnikitValueError(f"checkpoint expected a .safetensors file but got {str(weights)!r}")
    state = load_file(str(weights), device="cpu")
    with safe_open(str(weights), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get(_ALIASES_KEY, "{}"))
    for alias, source in aliases.items():
        state[alias] = state[source]
    return state


def load_weights(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> nn.Module:
    """Load a checkpoint's tensors into ``model`` strictly; returns ``model``.

    Raises ``ValueError`` naming every missing, unexpected or mis-shaped key.
    """
    state = _read_state(Path(path), allow_pickle)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {keys[:20]}{' ...' if len(keys) > 20 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        raise OmnikitValueError(f"checkpoint {str(path)!r} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


WEIGHTS_LOADER.append(load_weights)  # what create_model(..., pretrained=path) calls


def load_pretrained(
    directory: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> nn.Module:
    """Rebuild a model from ``config.json`` and load its weights strictly.

    ``directory`` may also be the weights file itself, with ``config.json`` beside it.
    """
    path = Path(directory)
    config_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} next to checkpoint {str(path)!r}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION or "name" not in config:
        raise OmnikitValueError(f"{str(config_path)!r} is not an omnikit config (format_version {FORMAT_VERSION})")
    if device is not None and torch.device(device).type == "meta":
        raise OmnikitValueError("`device` cannot be 'meta' when loading weights")
    model = create_model(config["name"], device=device, **_from_json(config.get("overrides", {})))
    load_weights(model, path, allow_pickle=allow_pickle)
    if dtype is not None:
        from omnikit.utils.precision import cast_model

        cast_model(model, dtype)
    return model
