"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP), and a consolidated export.

A DCP checkpoint is a directory of per-rank shards plus metadata, written and read by every rank
in parallel; it loads at any other world size or mesh (DCP reshards on load), and in one process
without a process group. :func:`export_pretrained` gathers the full weights and writes the
single-file :func:`omnikit.save_pretrained` layout instead, :func:`export_hf` the Hugging Face
layout of :func:`omnikit.convert.save_hf`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from omnikit.checkpoint import _spec_of, save_pretrained
from omnikit.convert.architectures import HF_ORIGIN_ATTR, origin_of
from omnikit.convert.empty_init import meta_parameters
from omnikit.convert.load import assign_state, tied_aliases
from omnikit.convert.save import save_hf
from omnikit.registry import create_model
from omnikit.utils.legacy_keys import legacy_key_renames

__all__ = ["export_hf", "export_pretrained", "full_state_dict", "load_distributed", "save_distributed"]


def save_distributed(model: nn.Module, directory: str | Path) -> Path:
    """Every rank writes its shards of ``model``'s weights to ``directory`` (collective)."""
    dcp.save(get_model_state_dict(model), checkpoint_id=str(directory))
    return Path(directory)


def load_distributed(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load a :func:`save_distributed` checkpoint into ``model`` (wrapped by ``parallelize`` at any
    mesh, or plain in one process without a process group); strict. Names an older layout of the
    model wrote (``legacy_state_prefixes``, e.g. ``video.*`` for ``adapters.video.*``) are read as
    the current ones."""
    state = get_model_state_dict(model)
    stored = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    as_stored = {current: name for name, current in legacy_key_renames(model, stored).items()}
    dcp.load({as_stored.get(k, k): v for k, v in state.items()}, checkpoint_id=str(directory))  # fills in place
    set_model_state_dict(model, state)
    return model


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
