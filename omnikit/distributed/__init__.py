"""Scale over ``torch.distributed``: FSDP2, HSDP, tensor parallel and expert parallel from one call.

::

    mesh = build_mesh(dp_shard=2, ep=2)            # after torch.distributed.init_process_group
    model = parallelize(create_model(...), mesh)    # the mesh's dimension names choose the strategies
    loss_fn(model(data_shard(batch, mesh))).backward()

Each class declares its part of the plan (FSDP units, tensor-parallel roles, MoE experts) with a
``parallel_plan()`` method beside its ``forward`` (data types in :mod:`omnikit.utils.parallel`);
this package holds the strategies only: see :mod:`omnikit.distributed.plan`.
"""

from omnikit.distributed.checkpoint import (
    export_hf,
    export_pretrained,
    full_state_dict,
    load_distributed,
    save_distributed,
)
from omnikit.distributed.ep import ExpertParallelExperts, apply_expert_parallel
from omnikit.distributed.mesh import MESH_DIMS, build_mesh, data_parallel_coords, data_shard
from omnikit.distributed.parallelize import parallelize
from omnikit.distributed.plan import ParallelPlan, collect_plan, declared_plan, register_parallel_plan

__all__ = [
    "MESH_DIMS",
    "ExpertParallelExperts",
    "ParallelPlan",
    "apply_expert_parallel",
    "build_mesh",
    "collect_plan",
    "data_parallel_coords",
    "data_shard",
    "declared_plan",
    "export_hf",
    "export_pretrained",
    "full_state_dict",
    "load_distributed",
    "parallelize",
    "register_parallel_plan",
    "save_distributed",
]
