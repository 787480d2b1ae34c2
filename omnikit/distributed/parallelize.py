"""``parallelize(model, mesh)``: the strategies named by the mesh's dimensions, applied from the
model's declared plan (tensor or expert parallel first, then data parallel)."""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy

from omnikit.distributed.cp import apply_context_parallel
from omnikit.distributed.ep import apply_expert_parallel
from omnikit.distributed.fsdp import apply_data_parallel
from omnikit.distributed.mesh import DATA_DIMS, check_mesh
from omnikit.distributed.plan import collect_plan
from omnikit.distributed.tp import apply_tensor_parallel
from omnikit.distributed.tp_experts import ExpertTensorParallel
from omnikit.utils.checks import OmnikitTypeError

__all__ = ["parallelize"]


def parallelize(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    mp_policy: MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool | None = None,
) -> nn.Module:
    """Apply, in place, the strategies named by ``mesh``'s dimensions (``mesh.mesh_dim_names``):

    - ``"tp"``: the declared DTensor tensor-parallel styles;
    - ``"ep"``: every declared MoE experts module expert-parallel (its ranks also split the data);
    - ``"dp_shard"``: FSDP2 ``fully_shard`` of every declared unit, then of the root (with ``"ep"``
      the dense parameters shard over ``dp_shard x ep`` and the experts over ``dp_shard``);
    - ``"dp_replicate"``: replicated data parallel, or HSDP's replicate dimension with ``"dp_shard"``;
    - ``"cp"``: context parallel (:mod:`omnikit.distributed.cp`): each rank runs its load-balanced share
      of the positions (:func:`~omnikit.distributed.cp.cp_positions`), the decoder's attention gathers
      every rank's keys/values; parameters FSDP-shard over ``dp_shard x cp`` (or ``cp`` alone).

    Supported: any of ``dp_replicate``, ``dp_shard`` with ``tp``; ``ep`` with one of ``dp_replicate``,
    ``dp_shard`` (the dense parameters replicated or sharded over both dimensions, the experts over
    the data-parallel one) or with ``tp`` alone (the dense parameters FSDP-sharded over ``ep``, the
    experts replicated over ``tp``). Each data-parallel rank feeds its own slice of the batch
    (:func:`~omnikit.distributed.mesh.data_shard`); ranks along ``tp`` feed the same one. Modules
    with a ``run_absent_media`` switch (the early-fusion and cross-attention omni models, the
    published Thinkers' :class:`~omnikit.fusion.OmniThinker`) then run absent encoders on a
    zero-weighted dummy input, so that ranks without some modality issue the same collectives.

    Parameter names stay those of ``model``; sharded parameters and their gradients are DTensors.
    Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise OmnikitTypeError(f"`model` expected an nn.Module but got {type(model).__name__}")
    names = check_mesh(mesh)
    plan = collect_plan(model)
    if "tp" in names:
        if "ep" in names:  # experts are expert-parallel, replicated over tp
            plan.tp = {path: style for path, style in plan.tp.items() if not isinstance(style, ExpertTensorParallel)}
        apply_tensor_parallel(model, plan, mesh["tp"])
    ignored = None
    if "ep" in names:
        for experts in plan.experts:
            apply_expert_parallel(experts, mesh["ep"])
        if "dp_shard" not in names:
            ignored = {p for experts in plan.experts for p in experts.parameters()}
    data = [n for n in names if n in DATA_DIMS]
    options = dict(mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
    if "cp" in names:  # parameters shard over every rank that splits the data or the sequence
        apply_context_parallel(model, mesh["cp"])
        shard_mesh = mesh["dp_shard", "cp"]._flatten("dp_shard_cp") if "dp_shard" in names else mesh["cp"]
        apply_data_parallel(model, plan, shard_mesh, shard=True, **options)
    elif not data:
        return model
    elif data == ["dp_replicate"]:
        apply_data_parallel(model, plan, mesh["dp_replicate"], shard=False, mp_policy=mp_policy)
    elif "ep" in data and len(data) == 2:  # dense weights over both dimensions, experts over the first
        dense = mesh[data[0], "ep"]._flatten(f"{data[0]}_ep")
        apply_data_parallel(model, plan, dense, shard=data[0] == "dp_shard", expert_mesh=mesh[data[0]], **options)
    else:
        apply_data_parallel(model, plan, mesh[tuple(data)], shard=True, ignored_params=ignored, **options)
    for module in model.modules():
        if isinstance(getattr(module, "run_absent_media", None), bool):
            module.run_absent_media = True
    return model
