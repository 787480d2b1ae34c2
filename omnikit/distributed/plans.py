"""The parallel plans of omnikit's own model families (see :mod:`omnikit.distributed.plan`).

- transformer stacks (:class:`~omnikit.layers.decoder.Decoder`, :class:`~omnikit.layers.hybrid.HybridDecoder`,
  the audio encoders' :class:`~omnikit.audio.blocks.EncoderStack`, the vision
  :class:`~omnikit.layers.stack.TransformerStack`): every block is an FSDP unit;
- :class:`~omnikit.layers.attention.Attention`: the fused q/k/v projection column-parallel with
  its output gathered (the q/k/v rows of one head are not contiguous in the fused weight, so heads
  are not split for the attention itself), the output projection row-parallel;
- :class:`~omnikit.layers.mlp.SwiGLU`: gate/up column-parallel, down row-parallel (no
  communication between them);
- :class:`~omnikit.models.CausalLM` (and the Thinker): vocabulary-parallel embedding and LM head,
  tied again when the model ties them;
- :class:`~omnikit.moe.MoE`: its routed experts run expert-parallel;
- :class:`~omnikit.fusion.omni.EarlyFusionOmni`: each media adapter is an FSDP unit.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

from omnikit.audio.blocks import EncoderStack
from omnikit.distributed.plan import ParallelPlan, register_parallel_plan
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder
from omnikit.layers.hybrid import HybridDecoder
from omnikit.layers.mlp import SwiGLU
from omnikit.layers.stack import TransformerStack
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE

__all__: list[str] = []


@register_parallel_plan(Decoder)
@register_parallel_plan(HybridDecoder)
@register_parallel_plan(EncoderStack)
@register_parallel_plan(TransformerStack)
def _block_stack(stack: nn.Module) -> ParallelPlan:
    return ParallelPlan(fsdp_units=list(stack.blocks))


@register_parallel_plan(Attention)
def _attention(attn: Attention) -> ParallelPlan:
    return ParallelPlan(tp={
        "qkv": ColwiseParallel(output_layouts=Replicate()),
        "out": RowwiseParallel(input_layouts=Replicate()),
    })


@register_parallel_plan(SwiGLU)
def _swiglu(mlp: SwiGLU) -> ParallelPlan:
    return ParallelPlan(tp={"gate": ColwiseParallel(), "up": ColwiseParallel(), "down": RowwiseParallel()})


@register_parallel_plan(CausalLM)
def _causal_lm(lm: CausalLM) -> ParallelPlan:
    tied = [("lm_head.weight", "embed.weight")] if lm.config.tie_embeddings else []
    return ParallelPlan(
        tp={
            "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
            "lm_head": ColwiseParallel(output_layouts=Replicate()),
        },
        tied=tied,
    )


@register_parallel_plan(MoE)
def _moe(moe: MoE) -> ParallelPlan:
    return ParallelPlan(experts=[moe.experts])


@register_parallel_plan(EarlyFusionOmni)
def _early_fusion(omni: EarlyFusionOmni) -> ParallelPlan:
    return ParallelPlan(fsdp_units=[m for m in (omni.audio, omni.video) if m is not None])
