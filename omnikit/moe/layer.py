"""The mixture-of-experts layer: a drop-in replacement for a dense MLP.

    moe = MoE(MoEConfig(dim=1024, num_experts=64, top_k=8, expert_hidden=512))
    y = moe(x)                          # (..., dim) -> (..., dim)
    y, aux = moe(x, return_aux=True)    # aux.load_balancing_loss, aux.z_loss, aux.tokens_per_expert ...

Nothing about a forward is left on the module: losses and routing statistics come back only in
the :class:`MoEAux` a caller asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.layers.mlp import SwiGLU
from omnikit.moe.dispatch import DispatchPlan, expert_choice_plan, token_choice_plan
from omnikit.moe.experts import SwiGLUExperts
from omnikit.moe.losses import load_balancing_loss, router_z_loss
from omnikit.moe.router import TopKRouter
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    OmnikitValueError,
    check_choice,
    check_finite,
    check_positive,
    check_tensor,
    check_weight_dtype,
)
from omnikit.utils.parallel import ParallelPlan, expert_hidden

__all__ = ["MoE", "MoEAux", "MoEConfig"]


@dataclass
class MoEConfig:
    """Hyper-parameters of a :class:`MoE` layer.

    Attributes:
        dim: token width.
        num_experts: routed experts ``E``.
        top_k: experts per token (token choice), or average experts per token (expert choice).
        expert_hidden: SwiGLU width of each routed expert.
        shared_hidden: width of the always-on shared SwiGLU expert (0: none). Several shared
            experts of width ``h`` are one of width ``n * h``.
        shared_gate: scale the shared expert by ``sigmoid(Linear(dim, 1)(x))`` (Qwen2-MoE).
        scoring: ``"softmax"`` or ``"sigmoid"`` router scores (see :class:`TopKRouter`).
        normalize_weights: renormalise each token's top-k weights to sum to 1.
        route_scale: multiply the routed weights (DeepSeek-V3 ``routed_scaling_factor``).
        routing: ``"token_choice"`` (each token picks ``top_k`` experts) or ``"expert_choice"``
            (each expert picks ``capacity`` tokens; batch-dependent, not causal).
        capacity_factor: ``None`` is dropless; otherwise each expert takes at most
            ``ceil(factor * N * top_k / E)`` rows and the overflow is dropped (and counted).
            Expert choice uses 1.0 when ``None``.
        balance_bias: auxiliary-loss-free balancing bias (DeepSeek-V3), see :meth:`MoE.update_bias`.
        expert_gemm: ``"auto"``, ``"ragged"`` or ``"padded"`` expert GEMMs (see :class:`SwiGLUExperts`).
    """

    dim: int
    num_experts: int
    top_k: int
    expert_hidden: int
    shared_hidden: int = 0
    shared_gate: bool = False
    scoring: str = "softmax"
    normalize_weights: bool = True
    route_scale: float = 1.0
    routing: str = "token_choice"
    capacity_factor: float | None = None
    balance_bias: bool = False
    expert_gemm: str = "auto"


@dataclass
class MoEAux:
    """Auxiliary losses and routing statistics of one forward (returned with ``return_aux=True``).

    Attributes:
        load_balancing_loss: ``()`` Switch loss, ``E * sum_e f_e P_e`` (``k`` when balanced);
            zero under expert choice, which is balanced by construction.
        z_loss: ``()`` router z-loss, ``mean(logsumexp(logits)^2)``.
        router_logits: ``(N, E)`` float32 logits of the ``N`` tokens (flattened leading dims).
        tokens_per_expert: ``(E,)`` int64 rows each expert was asked to take (before capacity).
        dropped: ``()`` int64 routed pairs dropped by the capacity limit (token choice), or tokens
            that no expert chose (expert choice). Zero when dropless.
    """

    load_balancing_loss: torch.Tensor
    z_loss: torch.Tensor
    router_logits: torch.Tensor
    tokens_per_expert: torch.Tensor
    dropped: torch.Tensor

    @property
    def expert_load(self) -> torch.Tensor:
        """``(E,)`` float fraction of the routed rows each expert received (sums to 1)."""
        counts = self.tokens_per_expert.float()
        return counts / counts.sum().clamp(min=1)


class MoE(nn.Module):
    """Mixture of SwiGLU experts. ``forward(x: (..., dim)) -> (..., dim)``.

    Submodules: ``router`` (:class:`TopKRouter`, fp32), ``experts`` (:class:`SwiGLUExperts`),
    optionally ``shared`` (:class:`SwiGLU`) and ``shared_gate`` (``Linear(dim, 1)``).

    ``router``: another router to use instead of the :class:`TopKRouter` the config describes: any
    module with ``forward(x (N, dim)) -> Routing`` and ``score(x) -> (logits, scores)`` ``(N, E)``
    (mark it ``keep_fp32 = True`` to keep it float32 under ``create_model(dtype=bf16)``).

    The routed experts run as grouped GEMMs over tokens sorted by expert (one sort per forward,
    ``torch._grouped_mm`` where available) with a backward grouped the same way.
    """

    #: ``DecoderBlock(..., return_aux=True)`` forwards ``return_aux`` to MLPs that declare this.
    returns_aux = True

    def __init__(self, config: MoEConfig, router: nn.Module | None = None) -> None:
        super().__init__()
        check_choice(config.routing, "routing", ("token_choice", "expert_choice"))
        check_positive(config.shared_hidden, "shared_hidden", allow_zero=True)
        if config.capacity_factor is not None and not config.capacity_factor > 0:
            raise OmnikitValueError(f"`capacity_factor` expected None or a float > 0 but got {config.capacity_factor}")
        if config.shared_gate and not config.shared_hidden:
            raise OmnikitValueError("`shared_gate=True` needs a shared expert (`shared_hidden` > 0)")
        if config.routing == "expert_choice" and config.balance_bias:
            raise OmnikitValueError("`balance_bias` applies to token choice; expert choice is balanced by design")
        self.config = config
        self.router = router if router is not None else TopKRouter(
            config.dim, config.num_experts, config.top_k, scoring=config.scoring,
            normalize=config.normalize_weights, scale=config.route_scale, balance_bias=config.balance_bias,
        )
        self.experts = SwiGLUExperts(config.num_experts, config.dim, config.expert_hidden, gemm=config.expert_gemm)
        self.shared = SwiGLU(config.dim, config.shared_hidden) if config.shared_hidden else None
        self.shared_gate = nn.Linear(config.dim, 1, bias=False) if config.shared_gate else None

    def parallel_plan(self) -> ParallelPlan:
        """Routed experts expert-parallel under ``ep``, split over their hidden width under ``tp`` alone."""
        return ParallelPlan(experts=[self.experts], tp={"experts": expert_hidden(self.experts.hidden)})

    @property
    def output_dim(self) -> int:
        return self.config.dim

    def plan(self, x: torch.Tensor) -> tuple[DispatchPlan, torch.Tensor, torch.Tensor]:
        """Route ``x: (N, dim)``: the dispatch plan and the float32 ``(logits, scores)``, each ``(N, E)``."""
        cfg = self.config
        if cfg.routing == "expert_choice":
            logits, scores = self.router.score(x)
            plan = expert_choice_plan(scores, cfg.top_k, cfg.capacity_factor or 1.0)
            return plan, logits, scores
        routing = self.router(x)
        plan = token_choice_plan(routing.expert_index, routing.weight, cfg.num_experts, cfg.capacity_factor)
        return plan, routing.logits, routing.scores

    def forward(self, x: torch.Tensor, *, return_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, MoEAux]:
        """Args:
            x: ``(..., dim)`` tokens.
            return_aux: also return the :class:`MoEAux` of this call.

        Returns:
            ``(..., dim)``, or ``(output, aux)`` with ``return_aux=True``.

        Raises:
            ValueError: (eager mode) ``x`` holds NaN or inf. Compiled code skips the check: a non-finite
                token then gives a non-finite output row and is left out of the auxiliary losses.
        """
        check_tensor(x, "x", floating=True)
        if x.ndim == 0 or x.shape[-1] != self.config.dim:
            raise OmnikitValueError(f"`x` expected shape (..., {self.config.dim}) but got {tuple(x.shape)}")
        check_weight_dtype(x, "x", self)
        check_finite(x, "x", "a MoE layer would route such tokens arbitrarily and its losses would hide them")
        tokens = x.reshape(-1, self.config.dim)
        plan, logits, scores = self.plan(tokens)
        out = self.experts(tokens, plan)
        if self.shared is not None:
            shared = self.shared(tokens)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(tokens)) * shared
            out = out + shared
        out = out.view(x.shape)
        if not return_aux:
            return out
        balance = (
            logits.new_zeros(()) if self.config.routing == "expert_choice"
            else load_balancing_loss(scores, plan.tokens_per_expert)
        )
        return out, MoEAux(balance, router_z_loss(logits), logits, plan.tokens_per_expert, plan.dropped)

    def update_bias(self, tokens_per_expert: torch.Tensor, rate: float = 1e-3) -> None:
        """Auxiliary-loss-free balancing step (see :meth:`TopKRouter.update_bias`)."""
        self.router.update_bias(tokens_per_expert, rate)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Tokens ``x: (B, max(lengths), dim)``; a MoE layer is token-wise, so padding is invisible."""
        g = torch.Generator().manual_seed(seed)
        lengths_t = torch.as_tensor(list(lengths), dtype=torch.int64)
        device = self.router.weight.device
        x = torch.randn(len(lengths_t), int(lengths_t.max()), self.config.dim, generator=g).to(device)
        return ContractInputs({"x": x}, lengths_t, {"x": 1}, None)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"routing={cfg.routing!r}, capacity_factor={cfg.capacity_factor}, shared_hidden={cfg.shared_hidden}"
