"""Mixture-of-experts layers: routers, grouped expert GEMMs, auxiliary losses.

``MoE(MoEConfig(...))`` is a drop-in replacement for a dense MLP (``(..., dim) -> (..., dim)``);
``moe(x, return_aux=True)`` also returns the auxiliary losses and routing statistics
(:class:`MoEAux`). Registered presets: ``omnikit.list_models(kind="moe")``.
"""

from omnikit.moe import presets
from omnikit.moe.dispatch import DispatchPlan, capacity, expert_choice_plan, token_choice_plan
from omnikit.moe.experts import SwiGLUExperts
from omnikit.moe.grouped import GroupedSwiGLU, RowChunk, RowLayout, TokenBags, grouped_mm_native, grouped_swiglu
from omnikit.moe.layer import MoE, MoEAux, MoEConfig
from omnikit.moe.losses import load_balancing_loss, router_z_loss
from omnikit.moe.plot import plot_expert_load
from omnikit.moe.router import Routing, TopKRouter
from omnikit.moe.scaled_router import ScaledNormRouter

__all__ = [
    "DispatchPlan",
    "GroupedSwiGLU",
    "MoE",
    "MoEAux",
    "MoEConfig",
    "Routing",
    "RowChunk",
    "RowLayout",
    "ScaledNormRouter",
    "SwiGLUExperts",
    "TokenBags",
    "TopKRouter",
    "capacity",
    "expert_choice_plan",
    "grouped_mm_native",
    "grouped_swiglu",
    "load_balancing_loss",
    "plot_expert_load",
    "presets",
    "router_z_loss",
    "token_choice_plan",
]
