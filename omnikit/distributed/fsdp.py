"""Data parallel: FSDP2 ``fully_shard`` per declared unit then the root (FSDP, or HSDP on a 2-D
mesh), or FSDP2's ``replicate`` (DDP)."""

from __future__ import annotations

from torch import nn
from torch.distributed._composable.replicate_with_fsdp import replicate
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from omnikit.distributed.plan import ParallelPlan

__all__ = ["apply_data_parallel"]


def apply_data_parallel(
    model: nn.Module,
    plan: ParallelPlan,
    mesh: DeviceMesh,
    *,
    shard: bool,
    expert_mesh: DeviceMesh | None = None,
    ignored_params: set[nn.Parameter] | None = None,
    mp_policy: MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool | None = None,
) -> nn.Module:
    """Wrap ``plan.fsdp_units`` (deepest first) and then ``model``; hook ``plan.fsdp_methods``.

    Args:
        mesh: data-parallel mesh of the dense parameters: 1-D (FSDP, or DDP when ``shard`` is
            False) or 2-D ``(replicate, shard)`` (HSDP).
        shard: ``fully_shard``, or only ``replicate``.
        expert_mesh: the mesh sharding (or, when ``shard`` is False, replicating) the expert-parallel
            experts' data-parallel copies; each experts module is then a unit of its own, wrapped first.
        ignored_params: parameters FSDP leaves alone (expert-parallel weights with no ``expert_mesh``).
        mp_policy: FSDP2 mixed precision (e.g. bf16 parameters with fp32 gradient reduction).
        reshard_after_forward: FSDP2's option (``None``: its default).
    """
    options = {"mp_policy": mp_policy or MixedPrecisionPolicy()}
    if shard:
        options["reshard_after_forward"] = reshard_after_forward
    wrap = fully_shard if shard else replicate
    if expert_mesh is not None:
        for experts in plan.experts:
            wrap(experts, mesh=expert_mesh, **options)
    for unit in [*plan.fsdp_units, model]:
        wrap(unit, mesh=mesh, ignored_params=ignored_params, **options)
    for module, method in plan.fsdp_methods:
        if isinstance(module, FSDPModule):
            register_fsdp_forward_method(module, method)
    return model
