"""Per-GPU memory of a model under a parallel plan, from its shapes (build it on ``device="meta"``).

Assumptions (FSDP2 with ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` and Adam):
float32 sharded parameters (4 B), float32 gradients (4 B), two float32 Adam moments (8 B), each
divided by the number of ranks that shard it; while a unit runs, its bf16 copy is all-gathered,
and the next one is prefetched (2 x the largest unit, 2 B per element). Activations per token count
the bf16 inputs and outputs of every matmul of the model's token stack (decoder blocks when it has
some): for a MoE layer, ``top_k`` experts' worth; the hidden width of tensor-parallel MLPs and
routed experts divided by ``tp``, and so are the q/k/v outputs and the attention output
projection's input (attention is split by heads). With activation checkpointing, one block input
per block plus one block recomputed.
Norms, residual adds and attention scores (flash/SDPA) are not counted: a first-order estimate.

Run ``python -m omnikit.distributed.memory`` for the table of every published preset.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.distributed.plan import collect_plan
from omnikit.distributed.tp import tp_sharded_parameters
from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder, DecoderBlock
from omnikit.layers.hybrid import HybridDecoder
from omnikit.moe.experts import SwiGLUExperts
from omnikit.moe.layer import MoE

__all__ = ["MemoryEstimate", "estimate_memory", "memory_table"]

GIB = 2**30


@dataclass
class MemoryEstimate:
    """Bytes per GPU: sharded states, the all-gathered working copy, activations per token."""

    params: float
    grads: float
    optimizer: float
    gathered: float
    activations_per_token: float
    activations_per_token_checkpointed: float

    @property
    def states(self) -> float:
        return self.params + self.grads + self.optimizer + self.gathered


def _shard_factors(model: nn.Module, sizes: dict[str, int]) -> tuple[dict[int, int], set[int]]:
    """``{id(param): ranks sharding it}`` and the ids of expert parameters."""
    plan = collect_plan(model)
    tp, ep, shard = sizes.get("tp", 1), sizes.get("ep", 1), sizes.get("dp_shard", 1)
    experts = {id(p) for e in plan.experts for p in e.parameters()}
    tp_params = tp_sharded_parameters(model, plan)
    if ep > 1:  # expert-parallel experts are not also tensor-parallel
        tp_params -= experts
    factors = {id(p): shard * ep * (tp if id(p) in tp_params else 1) for p in model.parameters()}
    return factors, experts


def _largest_unit(model: nn.Module, factors: dict[int, int], experts: set[int], sizes: dict[str, int]) -> int:
    """Elements of the largest FSDP unit once all-gathered over the data-parallel ranks."""
    plan = collect_plan(model)
    unsharded = {pid: f // (sizes.get("dp_shard", 1) * (sizes.get("ep", 1) if pid not in experts else 1))
                 for pid, f in factors.items()}
    seen: set[int] = set()
    largest = 0
    for unit in [*plan.fsdp_units, model]:
        params = [p for p in unit.parameters() if id(p) not in seen]
        seen |= {id(p) for p in params}
        largest = max(largest, sum(p.numel() // max(1, unsharded[id(p)]) for p in params))
    return largest


def _token_stack(model: nn.Module) -> list[nn.Module]:
    blocks = [b for m in model.modules() if isinstance(m, (Decoder, HybridDecoder)) for b in m.blocks]
    return blocks or [model]


def _activations(block: nn.Module, tp: int) -> float:
    """bf16 bytes per token of one block's matmul inputs and outputs (module docstring)."""
    total = 0.0
    moe = [m for m in block.modules() if isinstance(m, MoE)]
    expert_ids = {id(m) for x in moe for m in x.experts.modules()}
    for module in block.modules():
        if isinstance(module, nn.Linear) and id(module) not in expert_ids:
            total += module.in_features + module.out_features
        elif isinstance(module, SwiGLUExperts):
            k = next(x.config.top_k for x in moe if x.experts is module)
            total += k * (module.dim + 3 * module.hidden / tp + module.dim)  # split over tp (without ep)
    if tp > 1 and isinstance(block, DecoderBlock) and not isinstance(block.mlp, MoE):
        hidden = block.mlp.down.in_features if hasattr(block.mlp, "down") else 0
        total -= 3 * hidden * (1 - 1 / tp)  # gate, up outputs and the down input are sharded
    if tp > 1:  # attention split by heads: the q/k/v outputs and the output projection's input are sharded
        total -= sum((m.qkv.out_features + m.out.in_features) * (1 - 1 / tp)
                     for m in block.modules() if isinstance(m, Attention))
    return 2 * total


def estimate_memory(model: nn.Module, sizes: dict[str, int]) -> MemoryEstimate:
    """Per-GPU bytes of ``model`` (any device, meta included) on a mesh of ``sizes`` (e.g.
    ``{"dp_shard": 8, "ep": 8}``); see the module docstring for what is counted."""
    factors, experts = _shard_factors(model, sizes)
    sharded = sum(p.numel() / factors[id(p)] for p in model.parameters())
    data_sharded = sizes.get("dp_shard", 1) * sizes.get("ep", 1) > 1
    gathered = 2 * 2 * _largest_unit(model, factors, experts, sizes) if data_sharded else 0
    blocks = _token_stack(model)
    per_block = [_activations(b, sizes.get("tp", 1)) for b in blocks]
    width = max(getattr(getattr(b, "norm1", None), "weight", torch.empty(0)).numel() for b in blocks)
    return MemoryEstimate(
        params=4 * sharded, grads=4 * sharded, optimizer=8 * sharded, gathered=gathered,
        activations_per_token=sum(per_block),
        activations_per_token_checkpointed=2 * width * len(blocks) + max(per_block),
    )


def plans_for(model: nn.Module, gpus: int) -> dict[str, dict[str, int]]:
    """The plans tabulated at ``gpus``: DDP, FSDP, HSDP (8 per node), FSDP x TP8 (when 8 divides
    every attention's key/value heads, as head-split attention needs), FSDP x EP8 (MoE)."""
    plans = {"DDP": {"dp_replicate": gpus}, "FSDP": {"dp_shard": gpus}}
    if gpus > 8:
        plans["HSDP 8/node"] = {"dp_replicate": gpus // 8, "dp_shard": 8}
    if all(m.num_kv_heads % 8 == 0 for m in model.modules() if isinstance(m, Attention)):
        plans["FSDP x TP8"] = {"dp_shard": gpus // 8, "tp": 8}
    experts = collect_plan(model).experts
    if experts and all(e.num_experts % 8 == 0 for e in experts):
        plans["FSDP x EP8"] = {"dp_shard": gpus // 8, "ep": 8}
    return plans


def memory_table(names: list[str], gpus: tuple[int, ...] = (8, 64)) -> str:
    """Markdown table of every preset in ``names`` (built on meta) under :func:`plans_for`."""
    import omnikit

    header = ("| preset | params (B) | plan | GPUs | params GiB | grads GiB | Adam GiB | gathered GiB | "
              "states GiB | act. KiB/token | act. KiB/token, ckpt |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name in names:
        model = omnikit.create_model(name, device="meta")
        billions = omnikit.count_parameters(model) / 1e9
        for n in gpus:
            for plan, sizes in plans_for(model, n).items():
                m = estimate_memory(model, sizes)
                lines.append(
                    f"| {name} | {billions:.2f} | {plan} | {n} | {m.params / GIB:.2f} | {m.grads / GIB:.2f} | "
                    f"{m.optimizer / GIB:.2f} | {m.gathered / GIB:.2f} | {m.states / GIB:.2f} | "
                    f"{m.activations_per_token / 1024:.0f} | {m.activations_per_token_checkpointed / 1024:.0f} |"
                )
    return "\n".join(lines)


def published_presets() -> list[str]:
    """Registered names without the ``_tiny`` test variants."""
    import omnikit

    return [n for n in omnikit.list_models() if "tiny" not in n]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="per-GPU memory of the published presets under each plan")
    parser.add_argument("names", nargs="*", help="presets (default: every published one)")
    args = parser.parse_args()
    print(memory_table(args.names or published_presets()))
