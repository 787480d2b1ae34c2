"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP), and a consolidated export.

A DCP checkpoint is a directory of per-rank shards plus metadata, written and read by every rank
in parallel; it loads at any other world size or mesh (DCP reshards on load), and in one process
without a process group. :func:`export_pretrained` gathers the full weights and writes the
single-file :func:`omnikit.save_pretrained` layout instead, :func:`export_hf` the Hugging Face
layout of :func:`omnikit.convert.save_hf`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.optim.lr_scheduler import LRScheduler

from omnikit.checkpoint import _spec_of, save_pretrained, write_atomically
from omnikit.convert.architectures import HF_ORIGIN_ATTR, origin_of
from omnikit.convert.empty_init import meta_parameters
from omnikit.convert.load import assign_state, tied_aliases
from omnikit.convert.save import save_hf
from omnikit.distributed.resume import dumps, loads
from omnikit.registry import create_model
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_directory
from omnikit.utils.legacy_keys import legacy_key_renames

__all__ = ["LATEST", "export_hf", "export_pretrained", "full_state_dict", "load_distributed", "read_extra",
           "save_distributed"]

#: The file in a checkpoint directory that names its complete ``state-NNNNNN`` folder.
LATEST = "LATEST"
#: Name parts of wrappers (``torch.compile``, activation checkpointing) that state-dict names leave out.
_WRAPPERS = re.compile(r"(_orig_mod|_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")


def save_distributed(
    model: nn.Module,
    directory: str | Path,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Every rank writes its shards of ``model``'s weights, and of ``optimizer``'s state when given, to
    ``directory`` (collective; in one process without a process group too). ``scheduler``'s state and
    ``extra`` (step, data position, :func:`~omnikit.distributed.resume.rng_state`, ...: JSON values,
    tuples, tensors, numpy arrays) are written per rank; :func:`read_extra` gives them back.

    The save is atomic: it writes a new ``state-NNNNNN`` folder inside ``directory`` and then
    replaces the ``LATEST`` file that names it (temporary file, fsync, rename), so a save that fails
    or is killed part way leaves the previous checkpoint in ``directory`` whole and loadable; older
    folders are removed after the switch. Returns ``directory``.
    """
    _check_training_state(model, optimizer, scheduler)
    if extra is not None and not isinstance(extra, Mapping):
        raise OmnikitTypeError(f"`extra` expected a mapping of names to values but got {type(extra).__name__}")
    scheduler_state = None if scheduler is None else scheduler.state_dict()
    text = dumps({"scheduler": scheduler_state, "extra": dict(extra or {})})  # checked before anything is written
    out = check_directory(directory, "directory", to_write=True)
    version = _next_version(out)
    path = out / version
    path.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    with _dcp_call("writing", path):
        dcp.save(state, checkpoint_id=str(path))
    write_atomically(path, [(f"trainer-rank{_rank()}.json", lambda p: p.write_text(text, encoding="utf-8"))])
    _barrier()
    if _rank() == 0:
        write_atomically(out, [(LATEST, lambda p: p.write_text(version + "\n", encoding="utf-8"))])
        for old in out.glob("state-*"):
            if old.name != version and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return out


def load_distributed(
    model: nn.Module,
    directory: str | Path,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
) -> nn.Module:
    """Load a :func:`save_distributed` checkpoint into ``model`` (wrapped by ``parallelize`` at any
    mesh, or plain in one process without a process group); strict. ``optimizer`` and ``scheduler``
    (built as for the saved run, over the same parameters) are restored in place. Names an older
    layout of the model wrote (``legacy_state_prefixes``, e.g. ``video.*`` for ``adapters.video.*``)
    are read as the current ones; a folder written by ``dcp.save`` of the bare weights loads too."""
    _check_training_state(model, optimizer, scheduler)
    path, nested = _current(check_directory(directory, "directory"))
    stored = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "model." if nested else ""
    names = [k[len(prefix):] for k in stored if k.startswith(prefix)]
    as_stored = {current: name for name, current in legacy_key_renames(model, names).items()}
    state = get_model_state_dict(model)
    weights = {as_stored.get(k, k): v for k, v in state.items()}
    _check_fits(weights, {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}, path)
    request: dict[str, Any] = {"model": weights} if nested else weights
    stepped: set[str] = set()  # parameters the saved optimizer had state for
    if optimizer is not None:
        if not any(k.startswith("optimizer.") for k in stored):
            raise OmnikitValueError(f"`optimizer` was given but the checkpoint {str(path)!r} holds no optimizer state")
        stepped = {k[len("optimizer.state."):].rpartition(".")[0] for k in stored if k.startswith("optimizer.state.")}
        optim = get_optimizer_state_dict(model, optimizer)
        optim["state"] = {fqn: v for fqn, v in optim["state"].items() if fqn in stepped}
        request["optimizer"] = optim
    with _dcp_call("reading", path):
        dcp.load(request, checkpoint_id=str(path))  # fills in place
    set_model_state_dict(model, state)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, request["optimizer"], options=StateDictOptions(strict=False))
        # a parameter without a gradient before the save had no state: it starts afresh, as it would have
        names = {p: _WRAPPERS.sub("", n) for n, p in model.named_parameters()}
        for param in [p for p in optimizer.state if names.get(p) not in stepped]:
            del optimizer.state[param]
    if scheduler is not None:
        saved = _trainer_state(path)["scheduler"]
        if saved is None:
            raise OmnikitValueError(f"`scheduler` was given but the checkpoint {str(path)!r} holds no scheduler state")
        scheduler.load_state_dict(saved)
    return model


def read_extra(directory: str | Path) -> dict[str, Any]:
    """The ``extra`` mapping :func:`save_distributed` wrote (this rank's; rank 0's when the checkpoint
    was written by fewer ranks, or for a process without a process group)."""
    path, nested = _current(check_directory(directory, "directory"))
    if not nested:
        raise OmnikitValueError(f"`directory` {str(directory)!r} holds bare weights without `extra`")
    return _trainer_state(path)["extra"]


def _check_training_state(model: object, optimizer: object, scheduler: object) -> None:
    """``model`` is a module, ``optimizer`` (when given) an optimizer over ``model``'s parameters only, and
    ``scheduler`` (when given) has a state to save and load."""
    if not isinstance(model, nn.Module):
        raise OmnikitTypeError(f"`model` expected a torch.nn.Module but got {type(model).__name__}")
    if optimizer is not None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise OmnikitTypeError(f"`optimizer` expected a torch.optim.Optimizer but got {type(optimizer).__name__}")
        own = {id(p) for p in model.parameters()}
        foreign = sum(id(p) not in own for group in optimizer.param_groups for p in group["params"])
        if foreign:
            raise OmnikitValueError(f"`optimizer` holds {foreign} parameters that are not `model`'s; build it "
                                    f"over `model.parameters()` (after `parallelize`, when the model is wrapped)")
    if scheduler is not None and not (callable(getattr(scheduler, "state_dict", None))
                                      and callable(getattr(scheduler, "load_state_dict", None))):
        raise OmnikitTypeError(f"`scheduler` expected an LRScheduler (state_dict / load_state_dict) but got "
                               f"{type(scheduler).__name__}")


def _check_fits(weights: Mapping[str, Any], stored: Mapping[str, Any], path: Path) -> None:
    """Every tensor of ``weights`` is in the checkpoint with its shape (``stored``: DCP's metadata)."""
    missing = sorted(k for k in weights if k not in stored)
    shaped = sorted(f"{k}: checkpoint {tuple(stored[k].size)} vs model {tuple(v.shape)}" for k, v in weights.items()
                    if k in stored and hasattr(stored[k], "size") and tuple(stored[k].size) != tuple(v.shape))
    if missing or shaped:
        problems = [f"{label} ({len(items)}): {items[:3]}" for label, items in (("missing", missing),
                                                                               ("mis-shaped", shaped)) if items]
        raise OmnikitValueError(f"`model` does not fit the checkpoint {str(path)!r}: " + "; ".join(problems))


@contextlib.contextmanager
def _dcp_call(action: str, path: Path) -> Iterator[None]:
    """Around a DCP save or load: without a process group DCP warns that it assumes one process (the
    documented use here), so that warning is hidden. DCP reports a rank's failure as a
    ``CheckpointException``, a ``BaseException`` that a training loop's ``except Exception`` misses; the
    failing rank's own exception (``OSError`` for a full disk, ...) is raised instead, naming the folder."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            yield
        except CheckpointException as failed:
            rank, (cause, _) = min(failed.failures.items())
            if not isinstance(cause, Exception):
                raise
            cause.add_note(f"omnikit: {action} the checkpoint {str(path)!r} failed on rank {rank} "
                           f"(failed ranks: {sorted(failed.failures)})")
            raise cause from failed


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _next_version(out: Path) -> str:
    """``state-NNNNNN`` one past the newest folder in ``out``, chosen by rank 0 for every rank."""
    numbers = [int(p.name[6:]) for p in out.glob("state-*") if p.name[6:].isdigit()] if out.is_dir() else []
    chosen = [f"state-{max(numbers, default=0) + 1:06d}"]
    if dist.is_initialized():
        dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def _current(directory: Path) -> tuple[Path, bool]:
    """(the folder of the complete checkpoint in ``directory``, whether it is the save_distributed layout)."""
    pointer = directory / LATEST
    if pointer.is_file():
        return directory / pointer.read_text(encoding="utf-8").strip(), True
    if not (directory / ".metadata").is_file():
        raise OmnikitValueError(f"`directory` expected a save_distributed checkpoint but {str(directory)!r} has none")
    return directory, False


def _trainer_state(path: Path) -> dict[str, Any]:
    mine = path / f"trainer-rank{_rank()}.json"
    return loads((mine if mine.is_file() else path / "trainer-rank0.json").read_text(encoding="utf-8"))


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, on rank 0 (an empty dict on other ranks; collective)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Gather ``model`` (built by ``create_model``, then parallelized) and let rank 0 write it with
    :func:`omnikit.save_pretrained`; every rank must call it."""
    spec = _spec_of(model)
    state = full_state_dict(model)
    if not dist.is_initialized() or dist.get_rank() == 0:
        twin = create_model(spec.name, **spec.overrides)
        twin.load_state_dict(state)
        save_pretrained(twin, directory)
    if dist.is_initialized():
        dist.barrier()
    return Path(directory)


def export_hf(model: nn.Module, directory: str | Path, **save_options) -> Path:
    """Gather ``model`` (returned by :func:`omnikit.convert.load_hf`, or an architecture that exports
    its config, then parallelized) and let rank 0 write it with :func:`omnikit.convert.save_hf`
    (``save_options``: its keywords, e.g. ``max_shard_size``); every rank must call it."""
    origin, part = origin_of(model)
    state = full_state_dict(model)
    if not dist.is_initialized() or dist.get_rank() == 0:
        with meta_parameters():
            twin = part.build(origin.config)
        aliases = tied_aliases(twin)
        assign_state(twin, {k: v for k, v in state.items() if k not in aliases}, aliases)
        setattr(twin, HF_ORIGIN_ATTR, origin)
        save_hf(twin, directory, **save_options)
    if dist.is_initialized():
        dist.barrier()
    return Path(directory)
