"""Registered decoder presets: tiny models, published Qwen3 / Qwen3-MoE and Gemma 4 text shapes, the
Qwen3-Next / Qwen3.5 hybrid linear-attention LMs."""

from __future__ import annotations

from typing import Any

from omnikit.layers.decoder import DecoderConfig, MLPFactory
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.models.gemma4 import Gemma4Config, Gemma4LM
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.registry import configure, register_model

__all__ = [
    "QWEN3_5_9B",
    "QWEN3_5_35B_A3B",
    "QWEN3_5_35B_A3B_EXPERTS",
    "QWEN3_NEXT_TINY",
    "decoder_tiny",
    "gemma4_26b_a4b",
    "gemma4_31b",
    "gemma4_e2b",
    "gemma4_e4b",
    "gemma4_tiny",
    "hybrid_moe_tiny",
    "qwen3_0_6b",
    "qwen3_1_7b",
    "qwen3_5_9b",
    "qwen3_5_35b_a3b",
    "qwen3_5_moe_tiny",
    "qwen3_5_tiny",
    "qwen3_30b_a3b",
    "qwen3_next_80b_a3b",
    "qwen3_next_parts",
    "qwen3_next_tiny",
]


@register_model(kind="decoder", modalities=("text",))
def decoder_tiny(**overrides: Any) -> CausalLM:
    """A 2-layer GQA decoder LM (dim 64, vocab 256) for tests and examples."""
    return CausalLM(configure(
        DecoderConfig, "decoder_tiny", overrides,
        dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, vocab_size=256, rope_base=10000.0,
    ))


def _qwen3(name: str, overrides: dict[str, Any], **values: Any) -> DecoderConfig:
    """A Qwen3 LM's config: heads of 128, vocabulary 151936, rotary base 1e6, then ``values``."""
    return configure(DecoderConfig, name, overrides,
                     **{"head_dim": 128, "vocab_size": 151936, "rope_base": 1_000_000.0, **values})


@register_model(kind="decoder", modalities=("text",))
def qwen3_0_6b(**overrides: Any) -> CausalLM:
    """Qwen3-0.6B shapes: 28 layers, dim 1024, 16 q / 8 kv heads of 128, FFN 3072, tied embeddings."""
    return CausalLM(_qwen3("qwen3_0_6b", overrides, dim=1024, depth=28, num_heads=16, num_kv_heads=8,
                           mlp_hidden=3072, tie_embeddings=True))


@register_model(kind="decoder", modalities=("text",))
def qwen3_1_7b(**overrides: Any) -> CausalLM:
    """Qwen3-1.7B shapes: 28 layers, dim 2048, 16 q / 8 kv heads of 128, FFN 6144, tied embeddings."""
    return CausalLM(_qwen3("qwen3_1_7b", overrides, dim=2048, depth=28, num_heads=16, num_kv_heads=8,
                           mlp_hidden=6144, tie_embeddings=True))


@register_model(kind="decoder", modalities=("text",))
def qwen3_30b_a3b(**overrides: Any) -> CausalLM:
    """Qwen3-30B-A3B shapes (build on ``device="meta"``): 48 layers at dim 2048, 32 q / 4 kv heads of
    128, every MLP a MoE of 128 experts of FFN 768, top-8 renormalised softmax; untied embeddings."""
    config = _qwen3("qwen3_30b_a3b", overrides, dim=2048, depth=48, num_heads=32, num_kv_heads=4)
    moe = MoEConfig(dim=config.dim, num_experts=128, top_k=8, expert_hidden=768)
    return CausalLM(config, mlp_factory=lambda i: MoE(moe))


@register_model(kind="decoder", modalities=("text",))
def hybrid_moe_tiny(**overrides: Any) -> HybridDecoder:
    """Qwen3-Next-style hybrid MoE stack at dim 32: 3 Gated DeltaNet blocks per full-attention block,
    MoE MLPs (8 experts, top-2, gated shared expert)."""
    config = configure(
        HybridConfig, "hybrid_moe_tiny", overrides, dim=32, depth=4, num_heads=4, num_kv_heads=2, linear_heads=2,
        linear_v_heads=4, linear_head_dim=8, linear_v_head_dim=8, chunk_size=4,
    )
    moe = MoEConfig(dim=config.dim, num_experts=8, top_k=2, expert_hidden=16, shared_hidden=16, shared_gate=True)
    return HybridDecoder(config, mlp_factory=lambda i: MoE(moe))


def qwen3_next_parts(name: str, overrides: dict[str, Any], experts: tuple[int, int, int] | None,
                     **values: Any) -> tuple[HybridConfig, MLPFactory | None]:
    """The config and MLP factory of a Qwen3-Next / Qwen3.5 hybrid LM: zero-centred norms, output-gated
    attention with partial rotary, full attention every 4th layer, Gated DeltaNet elsewhere; with
    ``experts = (count, top_k, width)`` every MLP is a MoE with a sigmoid-gated shared expert of the same
    width (None: the config's dense MLP). Any class built on a :class:`HybridConfig` takes them (a
    :class:`CausalLM`, an omni Thinker)."""
    config = configure(
        HybridConfig, name, overrides, norm="rmsnorm_zero_centered", attn_output_gate=True, **values,
    )
    if experts is None:
        return config, None
    count, top_k, width = experts
    moe = MoEConfig(dim=config.dim, num_experts=count, top_k=top_k, expert_hidden=width, shared_hidden=width,
                    shared_gate=True)
    return config, lambda i: MoE(moe)


def _qwen3_next_lm(name: str, overrides: dict[str, Any], experts: tuple[int, int, int] | None,
                   **values: Any) -> CausalLM:
    """A Qwen3-Next / Qwen3.5 hybrid :class:`CausalLM` (see :func:`qwen3_next_parts`)."""
    return CausalLM(*qwen3_next_parts(name, overrides, experts, **values))


#: The Gated DeltaNet shapes every published Qwen3-Next / Qwen3.5 model above uses.
_PUBLISHED_DELTANET = dict(linear_heads=16, linear_head_dim=128, linear_v_heads=32, linear_v_head_dim=128)
#: The shapes of the tiny Qwen3-Next / Qwen3.5 LMs (dim 32, one full-attention block in four).
QWEN3_NEXT_TINY = dict(dim=32, depth=4, num_heads=4, num_kv_heads=2, head_dim=16, rotary_dim=4, rope_base=1e4,
                       linear_heads=2, linear_head_dim=8, linear_v_heads=4, linear_v_head_dim=8, chunk_size=4,
                       vocab_size=64)


@register_model(kind="decoder", modalities=("text",))
def qwen3_next_80b_a3b(**overrides: Any) -> CausalLM:
    """Qwen3-Next-80B-A3B (build on ``device="meta"``; its ``config.json`` values): 48 layers at dim 2048,
    gated full attention every 4th layer (16 q / 2 kv heads of 256, rotary on 64 dims, theta 1e7),
    Gated DeltaNet elsewhere (16 qk heads, 32 v heads, all of 128, fused projections), every MLP a MoE
    of 512 experts of 512, top-10 renormalised, sigmoid-gated shared expert of 512; vocab 151936."""
    return _qwen3_next_lm(
        "qwen3_next_80b_a3b", overrides, (512, 10, 512), dim=2048, depth=48, num_heads=16, num_kv_heads=2,
        head_dim=256, rotary_dim=64, rope_base=1e7, mlp_hidden=5120, vocab_size=151936, linear_projection="fused",
        **_PUBLISHED_DELTANET,
    )


#: Qwen3.5-9B's text model (see :func:`qwen3_5_9b`).
QWEN3_5_9B = dict(dim=4096, depth=32, num_heads=16, num_kv_heads=4, head_dim=256, rotary_dim=64, rope_base=1e7,
                  mlp_hidden=12288, vocab_size=248320, **_PUBLISHED_DELTANET)


@register_model(kind="decoder", modalities=("text",))
def qwen3_5_9b(**overrides: Any) -> CausalLM:
    """Qwen3.5-9B-style text model (build on ``device="meta"``): the values transformers'
    ``Qwen3_5TextConfig`` documents as "Qwen3.5-9B style": 32 layers at dim 4096, gated full attention
    every 4th layer (16 q / 4 kv heads of 256), Gated DeltaNet (16 qk / 32 v heads of 128, split
    projections), SwiGLU 12288, vocab 248320. Rope theta 1e7 is an assumption (no published
    ``config.json`` was readable here)."""
    return _qwen3_next_lm("qwen3_5_9b", overrides, None, **QWEN3_5_9B)


def _gemma4_pattern(depth: int, period: int) -> tuple[str, ...]:
    """``period - 1`` sliding layers then one full layer, repeated; the last layer full."""
    return tuple("full" if (i + 1) % period == 0 or i == depth - 1 else "sliding" for i in range(depth))


def _gemma4(name: str, overrides: dict[str, Any], depth: int, period: int, **values: Any) -> Gemma4LM:
    defaults = dict(depth=depth, layer_types=_gemma4_pattern(depth, period), vocab_size=262_144, head_dim=256,
                    global_head_dim=512, final_softcap=30.0)
    return Gemma4LM(configure(Gemma4Config, name, overrides, **{**defaults, **values}))


@register_model(kind="decoder", modalities=("text",))
def gemma4_tiny(**overrides: Any) -> Gemma4LM:
    """A 4-layer Gemma 4 LM at dim 32 with every text feature: sliding/full layers of head size 8/16,
    K = V full layers, KV sharing in the last 2 layers (double-wide MLPs), per-layer embeddings,
    a MoE of 4 tanh-GELU experts beside the MLP, final softcap."""
    return _gemma4(
        "gemma4_tiny", overrides, 4, 2, dim=32, num_heads=4, num_kv_heads=2, head_dim=8, global_head_dim=16,
        global_kv_heads=1, k_eq_v=True, mlp_hidden=32, vocab_size=128, sliding_window=4, num_kv_shared_layers=2,
        double_wide_mlp=True, per_layer_dim=8, num_experts=4, top_k=2, expert_hidden=16, final_softcap=10.0,
    )


@register_model(kind="decoder", modalities=("text",))
def gemma4_e2b(**overrides: Any) -> Gemma4LM:
    """Gemma 4 E2B text model shapes: 35 layers at dim 1536 (4 sliding : 1 full, window 512), 8 q / 1 kv
    heads of 256 (512 on full layers), FFN 6144 (12288 in the 20 KV-shared layers), per-layer embeddings
    of 256."""
    return _gemma4("gemma4_e2b", overrides, 35, 5, dim=1536, num_heads=8, num_kv_heads=1, mlp_hidden=6144,
                   num_kv_shared_layers=20, double_wide_mlp=True, per_layer_dim=256)


@register_model(kind="decoder", modalities=("text",))
def gemma4_e4b(**overrides: Any) -> Gemma4LM:
    """Gemma 4 E4B text model shapes: 42 layers at dim 2560 (5 sliding : 1 full, window 512), 8 q / 2 kv
    heads of 256 (512 on full layers), FFN 10240, KV shared in the last 18 layers, per-layer embeddings of 256."""
    return _gemma4("gemma4_e4b", overrides, 42, 6, dim=2560, num_heads=8, num_kv_heads=2, mlp_hidden=10240,
                   num_kv_shared_layers=18, per_layer_dim=256)


@register_model(kind="decoder", modalities=("text",))
def gemma4_26b_a4b(**overrides: Any) -> Gemma4LM:
    """Gemma 4 26B-A4B text model shapes (build on ``device="meta"``): 30 layers at dim 2816 (5 sliding :
    1 full, window 1024), 16 q / 8 kv heads of 256, full layers 2 kv heads of 512 with K = V, dense FFN
    2112 beside a MoE of 128 experts of 704, top-8."""
    return _gemma4("gemma4_26b_a4b", overrides, 30, 6, dim=2816, num_heads=16, num_kv_heads=8, global_kv_heads=2,
                   k_eq_v=True, mlp_hidden=2112, sliding_window=1024, num_experts=128, top_k=8, expert_hidden=704)


@register_model(kind="decoder", modalities=("text",))
def gemma4_31b(**overrides: Any) -> Gemma4LM:
    """Gemma 4 31B text model shapes (build on ``device="meta"``): 60 layers at dim 5376 (5 sliding : 1
    full, window 1024), 32 q / 16 kv heads of 256, full layers 4 kv heads of 512 with K = V, FFN 21504."""
    return _gemma4("gemma4_31b", overrides, 60, 6, dim=5376, num_heads=32, num_kv_heads=16, global_kv_heads=4,
                   k_eq_v=True, mlp_hidden=21504, sliding_window=1024)


#: Qwen3.5-35B-A3B's text shapes (transformers' ``Qwen3_5MoeTextConfig`` values; rope theta 1e7 assumed) and
#: its experts ``(count, top_k, width)``: shared with the Qwen3.5-Omni-style preset built on it.
QWEN3_5_35B_A3B = dict(dim=2048, depth=40, num_heads=16, num_kv_heads=2, head_dim=256, rotary_dim=64, rope_base=1e7,
                       vocab_size=248320, **_PUBLISHED_DELTANET)
QWEN3_5_35B_A3B_EXPERTS = (256, 8, 512)


@register_model(kind="decoder", modalities=("text",))
def qwen3_5_35b_a3b(**overrides: Any) -> CausalLM:
    """Qwen3.5-35B-A3B text model (build on ``device="meta"``): the values transformers'
    ``Qwen3_5MoeTextConfig`` documents for it: 40 layers at dim 2048, gated full attention every 4th
    layer (16 q / 2 kv heads of 256), Gated DeltaNet (16 qk / 32 v heads of 128, split projections),
    every MLP a MoE of 256 experts of 512, top-8, gated shared expert of 512; vocab 248320. Rope
    theta 1e7 is an assumption."""
    return _qwen3_next_lm("qwen3_5_35b_a3b", overrides, QWEN3_5_35B_A3B_EXPERTS, **QWEN3_5_35B_A3B)


@register_model(kind="decoder", modalities=("text",))
def qwen3_next_tiny(**overrides: Any) -> CausalLM:
    """Qwen3-Next layout at dim 32 (fused DeltaNet projections, gated MoE) for tests and examples."""
    return _qwen3_next_lm("qwen3_next_tiny", overrides, (4, 2, 16), linear_projection="fused", **QWEN3_NEXT_TINY)


@register_model(kind="decoder", modalities=("text",))
def qwen3_5_moe_tiny(**overrides: Any) -> CausalLM:
    """Qwen3.5-MoE layout at dim 32 (split DeltaNet projections, gated MoE in every layer) for tests."""
    return _qwen3_next_lm("qwen3_5_moe_tiny", overrides, (4, 2, 16), **QWEN3_NEXT_TINY)


@register_model(kind="decoder", modalities=("text",))
def qwen3_5_tiny(**overrides: Any) -> CausalLM:
    """Qwen3.5 layout at dim 32 (split DeltaNet projections, dense SwiGLU) for tests and examples."""
    return _qwen3_next_lm("qwen3_5_tiny", overrides, None, mlp_hidden=48, **QWEN3_NEXT_TINY)
