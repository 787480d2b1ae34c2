"""Tensor parallel: apply a collected plan's DTensor styles over the ``"tp"`` mesh dimension."""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import SequenceParallel, parallelize_module

from omnikit.distributed.plan import ParallelPlan

__all__ = ["apply_tensor_parallel", "tp_sharded_parameters"]


def _resolve(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    owner, _, leaf = path.rpartition(".")
    return (model.get_submodule(owner) if owner else model), leaf


def apply_tensor_parallel(model: nn.Module, plan: ParallelPlan, mesh: DeviceMesh) -> nn.Module:
    """Shard the modules of ``plan.tp`` over the 1-D ``mesh``, then tie ``plan.tied`` parameters again
    (both sides share one placement, e.g. the vocabulary-sharded embedding and LM head). Styles with
    a ``check(mesh)`` method (:class:`~omnikit.distributed.heads.HeadParallelQKV`,
    :class:`~omnikit.distributed.tp_experts.ExpertTensorParallel`) may refuse the mesh first, before
    anything is sharded."""
    for style in plan.tp.values():
        if callable(getattr(style, "check", None)):
            style.check(mesh)
    if plan.tp:
        parallelize_module(model, mesh, plan.tp)
    for path, source in plan.tied:
        owner, leaf = _resolve(model, path)
        src_owner, src_leaf = _resolve(model, source)
        setattr(owner, leaf, getattr(src_owner, src_leaf))
    return model


def tp_sharded_parameters(model: nn.Module, plan: ParallelPlan) -> set[int]:
    """Ids of the parameters that ``plan.tp`` shards; those of ``SequenceParallel`` styles (e.g. the
    q/k norms of head-split attention) stay replicated."""
    paths = [path for path, style in plan.tp.items() if not isinstance(style, SequenceParallel)]
    return {id(p) for path in paths for p in model.get_submodule(path).parameters()}
