"""Parallel plans: how :func:`parallelize` finds what each model family declares.

The plan types are data in :mod:`omnikit.utils.parallel` (:class:`ParallelPlan`, the
tensor-parallel roles); each class declares its part with a ``parallel_plan(self)`` method beside
its ``forward`` (``Attention``, ``SwiGLU``, the block stacks, ``CausalLM``, ``MoE``, the fusion
models' adapters, the published towers), so this package holds strategies and no knowledge of
the families. A class outside omnikit may instead be given a plan with
``@register_parallel_plan(cls)`` on a function::

    @register_parallel_plan(MyEncoder)
    def _my_encoder_plan(encoder: MyEncoder) -> ParallelPlan:
        return ParallelPlan(fsdp_units=list(encoder.layers), tp={"proj": COLWISE})

:func:`collect_plan` walks the whole model, joins the parts of every submodule and turns roles
into DTensor styles (:func:`tp_style`), so a model built from planned blocks needs no plan of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

from omnikit.distributed.heads import HeadParallelQKV, HeadShardedNorm
from omnikit.distributed.tp_experts import ExpertTensorParallel
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.utils.parallel import ParallelPlan, TPRole

__all__ = ["ParallelPlan", "collect_plan", "declared_plan", "register_parallel_plan", "tp_style"]

_STYLES: dict[str, Callable[..., ParallelStyle]] = {
    "colwise": ColwiseParallel,
    "rowwise": RowwiseParallel,
    "vocab_embed": lambda: RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
    "vocab_head": lambda: ColwiseParallel(output_layouts=Replicate()),
    "head_qkv": HeadParallelQKV,
    "head_norm": HeadShardedNorm,
    "expert_hidden": ExpertTensorParallel,
}


def tp_style(role: TPRole | ParallelStyle) -> ParallelStyle:
    """The DTensor style of a tensor-parallel ``role`` (a ``ParallelStyle`` is returned as it is)."""
    if isinstance(role, ParallelStyle):
        return role
    if not isinstance(role, TPRole) or role.kind not in _STYLES:
        raise OmnikitValueError(f"tensor-parallel role expected a TPRole of {sorted(_STYLES)} but got {role!r}")
    return _STYLES[role.kind](*role.args)


PlanFn = Callable[[Any], ParallelPlan]
_PLANS: dict[type, PlanFn] = {}


def register_parallel_plan(cls: type) -> Callable[[PlanFn], PlanFn]:
    """Decorator: ``fn(module) -> ParallelPlan`` declares the plan of every instance of ``cls``
    (and of its subclasses that declare none)."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise OmnikitTypeError(f"`cls` expected an nn.Module subclass but got {cls!r}")

    def add(fn: PlanFn) -> PlanFn:
        _PLANS[cls] = fn
        return fn

    return add


def declared_plan(module: nn.Module) -> ParallelPlan:
    """The part ``module`` declares itself: for the nearest class in its MRO that has one, the plan
    registered for it or its ``parallel_plan()`` method (a registration wins on the same class);
    else an empty plan."""
    for cls in type(module).__mro__:
        if cls in _PLANS:
            return _PLANS[cls](module)
        if callable(cls.__dict__.get("parallel_plan")):
            return module.parallel_plan()
    return ParallelPlan()


def collect_plan(model: nn.Module) -> ParallelPlan:
    """Every submodule's declared part joined, paths relative to ``model``; FSDP units deepest first
    (``fully_shard`` goes bottom-up), the root itself excluded."""
    plan = ParallelPlan()
    for name, module in model.named_modules():
        plan = plan.join(declared_plan(module), name)
    plan.tp = {path: tp_style(role) for path, role in plan.tp.items()}
    depth = {id(m): name.count(".") for name, m in model.named_modules()}
    units = [m for m in plan.fsdp_units if m is not model]
    plan.fsdp_units = sorted(units, key=lambda m: -depth[id(m)])
    return plan
