"""The parallel plans of omnikit's own model families (see :mod:`omnikit.distributed.plan`).

- transformer stacks (:class:`~omnikit.layers.decoder.Decoder`, :class:`~omnikit.layers.hybrid.HybridDecoder`,
  the audio encoders' :class:`~omnikit.audio.blocks.EncoderStack`, the vision
  :class:`~omnikit.layers.stack.TransformerStack`): every block is an FSDP unit;
- :class:`~omnikit.layers.attention.Attention`: split by heads, the fused q/k/v projection
  column-parallel with its rows reordered so that each rank holds its query heads and their
  key/value groups (:class:`~omnikit.distributed.heads.HeadParallelQKV`), the output projection
  row-parallel, the q/k norms' weights replicated (their gradients all-reduced): each rank attends
  with its own heads (an output-gated attention's gate rows travel with their query head);
- :class:`~omnikit.layers.linear_attention.GatedDeltaNet` (Qwen3-Next / Qwen3.5): no tensor-parallel
  split (replicated under ``tp``, like transformers' gathered-output plan); FSDP shards it with its block;
- :class:`~omnikit.layers.mlp.SwiGLU`: gate/up column-parallel, down row-parallel (no
  communication between them);
- :class:`~omnikit.models.CausalLM` (and the Thinker): vocabulary-parallel embedding and LM head,
  tied again when the model ties them;
- :class:`~omnikit.moe.MoE`: its routed experts run expert-parallel under ``ep``, and are split
  over their hidden width under ``tp`` without ``ep`` (:mod:`omnikit.distributed.tp_experts`);
- :class:`~omnikit.fusion.omni.EarlyFusionOmni`: each media adapter is an FSDP unit;
- the published Qwen-Omni structures: the vision towers (:class:`~omnikit.vision.WindowViT`,
  :class:`~omnikit.vision.Qwen3ViT`) and :class:`~omnikit.audio.code2wav.Code2Wav` shard block by
  block (Code2Wav also each upsampling decoder stage); :class:`~omnikit.fusion.OmniThinker` (and
  :class:`~omnikit.fusion.Qwen3OmniThinker`) makes each media tower a unit of its own; in the
  Qwen3-Omni Talker, each code-predictor head is a unit (its decoder blocks are, as any decoder's). Their attention,
  SwiGLU MLPs, decoders and MoE layers are the planned classes above, so TP and EP apply as they are.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

from omnikit.audio.blocks import EncoderStack
from omnikit.audio.code2wav import Code2Wav, DecoderStage
from omnikit.distributed.heads import HeadParallelQKV, HeadShardedNorm
from omnikit.distributed.plan import ParallelPlan, register_parallel_plan
from omnikit.distributed.tp_experts import ExpertTensorParallel
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder
from omnikit.layers.hybrid import HybridDecoder
from omnikit.layers.mlp import SwiGLU
from omnikit.layers.stack import TransformerStack
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker
from omnikit.vision.qwen3_vit import Qwen3ViT
from omnikit.vision.window_vit import WindowViT

__all__: list[str] = []


@register_parallel_plan(Decoder)
@register_parallel_plan(HybridDecoder)
@register_parallel_plan(EncoderStack)
@register_parallel_plan(TransformerStack)
def _block_stack(stack: nn.Module) -> ParallelPlan:
    return ParallelPlan(fsdp_units=list(stack.blocks))


@register_parallel_plan(Attention)
def _attention(attn: Attention) -> ParallelPlan:
    qkv = HeadParallelQKV(attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.query_width)
    styles = {"qkv": qkv, "out": RowwiseParallel()}
    norms = [name for name in ("q_norm", "k_norm") if getattr(attn, name) is not None]
    return ParallelPlan(tp={**styles, **{name: HeadShardedNorm() for name in norms}})


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
    return ParallelPlan(experts=[moe.experts], tp={"experts": ExpertTensorParallel(moe.experts.hidden)})


@register_parallel_plan(EarlyFusionOmni)
def _early_fusion(omni: EarlyFusionOmni) -> ParallelPlan:
    return ParallelPlan(fsdp_units=list(omni.adapters.values()))


@register_parallel_plan(WindowViT)
@register_parallel_plan(Qwen3ViT)
def _vision_tower(tower: nn.Module) -> ParallelPlan:
    # OmniThinker calls the tower through forward_patches, not forward
    return ParallelPlan(fsdp_units=list(tower.blocks), fsdp_methods=[(tower, "forward_patches")])


@register_parallel_plan(OmniThinker)
def _omni_thinker(thinker: OmniThinker) -> ParallelPlan:
    return ParallelPlan(fsdp_units=[m for m in (thinker.audio_encoder, thinker.vision_encoder) if m is not None])


@register_parallel_plan(Code2Wav)
def _code2wav(code2wav: Code2Wav) -> ParallelPlan:
    stages = [m for m in code2wav.decoder if isinstance(m, DecoderStage)]
    return ParallelPlan(fsdp_units=[*code2wav.blocks, *stages], fsdp_methods=[(code2wav, "decode")])


@register_parallel_plan(Qwen3OmniTalker)
def _qwen3_omni_talker(talker: Qwen3OmniTalker) -> ParallelPlan:
    # the predictor's embeddings also feed the Talker's input (``embed_frames``), before the predictor runs,
    # so they stay with the root; its decoder blocks are units through Decoder's plan
    return ParallelPlan(fsdp_units=list(talker.code_predictor.heads))
