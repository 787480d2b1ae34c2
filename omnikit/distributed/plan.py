"""Parallel plans: what each model family declares so that :func:`parallelize` can wrap it.

A plan names, for one module and relative to it:

- ``fsdp_units``: submodules sharded by FSDP2 one by one (each its own all-gather and
  reduce-scatter), before the root;
- ``tp``: ``{submodule path: ParallelStyle}``, the DTensor tensor-parallel plan;
- ``experts``: expert modules (:class:`omnikit.moe.SwiGLUExperts`) run expert-parallel;
- ``tied``: ``(path, source)`` parameters that share a tensor, tied again after tensor parallel;
- ``fsdp_methods``: ``(module, method name)``: methods other than ``forward`` through which a
  module is called (e.g. a vision tower's ``forward_patches``), hooked by FSDP2 as its forward is.

A class declares its own part, either with a ``parallel_plan(self) -> ParallelPlan`` method or with
``@register_parallel_plan(cls)`` on a function; :func:`collect_plan` walks the whole model and
joins the parts of every submodule, so a model built from planned blocks needs no plan of its own::

    @register_parallel_plan(MyEncoder)
    def _my_encoder_plan(encoder: MyEncoder) -> ParallelPlan:
        return ParallelPlan(fsdp_units=list(encoder.layers))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from torch.distributed.tensor.parallel import ParallelStyle

from omnikit.utils.checks import OmnikitTypeError

__all__ = ["ParallelPlan", "collect_plan", "declared_plan", "register_parallel_plan"]


@dataclass
class ParallelPlan:
    """The parallel layout one module declares (paths relative to it); see the module docstring."""

    fsdp_units: list[nn.Module] = field(default_factory=list)
    tp: dict[str, ParallelStyle] = field(default_factory=dict)
    experts: list[nn.Module] = field(default_factory=list)
    tied: list[tuple[str, str]] = field(default_factory=list)
    fsdp_methods: list[tuple[nn.Module, str]] = field(default_factory=list)

    def join(self, other: ParallelPlan, prefix: str = "") -> ParallelPlan:
        """This plan plus ``other`` declared by the submodule at ``prefix`` (``""``: the same module)."""
        dotted = f"{prefix}." if prefix else ""
        return ParallelPlan(
            fsdp_units=self.fsdp_units + [m for m in other.fsdp_units if m not in self.fsdp_units],
            tp={**self.tp, **{dotted + path: style for path, style in other.tp.items()}},
            experts=self.experts + [m for m in other.experts if m not in self.experts],
            tied=self.tied + [(dotted + a, dotted + b) for a, b in other.tied],
            fsdp_methods=self.fsdp_methods + [m for m in other.fsdp_methods if m not in self.fsdp_methods],
        )


PlanFn = Callable[[nn.Module], ParallelPlan]
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
    """The part ``module`` declares itself: its ``parallel_plan()`` method, else the plan registered
    for the nearest class in its MRO, else an empty plan."""
    method = getattr(module, "parallel_plan", None)
    if callable(method):
        return method()
    for cls in type(module).__mro__:
        if cls in _PLANS:
            return _PLANS[cls](module)
    return ParallelPlan()


def collect_plan(model: nn.Module) -> ParallelPlan:
    """Every submodule's declared part joined, paths relative to ``model``; FSDP units deepest first
    (``fully_shard`` goes bottom-up), the root itself excluded."""
    plan = ParallelPlan()
    for name, module in model.named_modules():
        plan = plan.join(declared_plan(module), name)
    depth = {id(m): name.count(".") for name, m in model.named_modules()}
    units = [m for m in plan.fsdp_units if m is not model]
    plan.fsdp_units = sorted(units, key=lambda m: -depth[id(m)])
    return plan
