"""Moshi from the Hub: transformers' ``MoshiForConditionalGeneration`` checkpoints as
:class:`omnikit.speech.moshi.Moshi`.

Part ``"moshi"`` (the default) is the whole model: the temporal transformer (``decoder.model.*``,
its gated MLP's ``fc1`` holding gate then up rows), the text head (``decoder.lm_head``), the text
and ``2K`` audio embeddings (``decoder.model.embed_tokens``, ``embed_tokens.{0..2K-1}``: the
assistant's ``K`` then the user's ``K``, stacked into one table), the depth decoder
(``depth_decoder.*``, per-codebook weights ``(K, out, in)``) and Mimi (``audio_encoder.*``).
Part ``"audio_encoder"`` loads Mimi alone. Config translation lives in :func:`moshi_config`.
"""

from __future__ import annotations

from torch import nn

from omnikit.audio.mimi import MimiTokenizer
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.hub_mimi import MIMI, mimi_key_map
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.layers.decoder import DecoderConfig
from omnikit.speech.moshi import Moshi, MoshiConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = ["moshi_config", "moshi_hf_config", "moshi_key_map"]


def _transformer(config: Config, *, depth: bool) -> DecoderConfig:
    """The :class:`DecoderConfig` of the temporal (``depth=False``) or depth transformer's config."""
    if config.get("hidden_act", "silu") != "silu":
        raise OmnikitValueError(f"Moshi hidden_act={config.get('hidden_act')!r} is not supported; expected 'silu'")
    rope = config.get("rope_parameters") or {}
    if not depth and rope.get("rope_type", "default") != "default":
        raise OmnikitValueError(f"Moshi rope_type={rope.get('rope_type')!r} is not supported; expected 'default'")
    heads = config["num_attention_heads"]
    if config["ffn_dim"] % 2:
        raise OmnikitValueError(f"Moshi ffn_dim={config['ffn_dim']} expected even (gate and up halves)")
    return DecoderConfig(
        dim=config["hidden_size"], depth=config["num_hidden_layers"], num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads, mlp_hidden=config["ffn_dim"] // 2,
        mlp="swiglu_fused", norm_eps=config.get("rms_norm_eps", 1e-8), qk_norm=False,
        rope_base=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        sliding_window=None if depth else config.get("sliding_window"),
    )


def moshi_config(config: Config) -> MoshiConfig:
    """The :class:`MoshiConfig` of a transformers ``MoshiForConditionalGeneration`` ``config.json``."""
    codec = MIMI(config["audio_encoder_config"])
    size = config.get("audio_vocab_size") or codec.codebook_size
    k = config["num_codebooks"]
    return MoshiConfig(
        temporal=_transformer(config, depth=False), text_vocab=config["vocab_size"], text_pad_id=0,
        num_codebooks=k, codebook_size=size, delays=(0,) + (1,) * (k - 1), frame_rate=codec.frame_rate,
        predictor=_transformer(config["depth_decoder_config"], depth=True), codec=codec, per_codebook_depth=True,
    )


def _hf_transformer(config: DecoderConfig) -> Config:
    """The ``config.json`` fields of a transformer (:func:`_transformer` reversed)."""
    return {
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads or config.num_heads,
        "head_dim": config.head_dim or config.dim // config.num_heads, "ffn_dim": 2 * config.mlp_hidden,
        "rms_norm_eps": config.norm_eps, "hidden_act": "silu",
    }


def moshi_hf_config(model: nn.Module) -> Config | None:
    """The transformers ``config.json`` of a :class:`Moshi` (:func:`moshi_config` reversed); None for another
    model or one transformers' layout cannot hold (other delays, a shared depth transformer ...)."""
    if not isinstance(model, Moshi):
        return None
    cfg = model.config
    t, k = cfg.temporal, cfg.num_codebooks
    if (t.mlp != "swiglu_fused" or t.qk_norm or t.qkv_bias or t.out_bias or t.norm != "rmsnorm"
            or t.mrope_sections is not None or t.attention_chunk is not None or model.delays != (0,) + (1,) * (k - 1)):
        return None
    depth = {**_hf_transformer(cfg.predictor), "max_position_embeddings": k, "sliding_window": k,
             "audio_vocab_size": cfg.codebook_size, "input_size": t.dim, "vocab_size": cfg.text_vocab,
             "num_codebooks": k}
    return {
        "architectures": ["MoshiForConditionalGeneration"], "model_type": "moshi", **_hf_transformer(t),
        "vocab_size": cfg.text_vocab, "audio_vocab_size": cfg.codebook_size, "num_codebooks": k,
        "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_base},
        "sliding_window": t.sliding_window or 3000, "max_position_embeddings": t.sliding_window or 3000,
        "audio_encoder_config": MIMI.write(cfg.codec), "depth_decoder_config": depth,
    }


def _layer_rules(ours: str, theirs: str, sizes: tuple[int, int, int], dim: int) -> KeyMap:
    """Norms, fused q/k/v (``sizes`` rows along ``dim``: 0 for a linear, 1 for per-codebook weights),
    output projection and gated MLP of one transformers ``MoshiDecoderLayer``."""
    attn = theirs + "self_attn."
    return KeyMap((
        Rename(ours + "norm1.weight", theirs + "input_layernorm.weight"),
        Rename(ours + "norm2.weight", theirs + "post_attention_layernorm.weight"),
        Fuse(ours + "attn.qkv.weight", tuple(f"{attn}{p}_proj.linear.weight" for p in "qkv"), sizes, dim=dim),
        Rename(ours + "attn.out.weight", attn + "o_proj.linear.weight"),
        Rename(ours + ("mlp.gate_up.weight" if dim == 0 else "mlp.fc1.weight"), theirs + "mlp.fc1.weight"),
        Rename(ours + ("mlp.down.weight" if dim == 0 else "mlp.fc2.weight"), theirs + "mlp.fc2.weight"),
    ))


def _qkv_sizes(config: DecoderConfig) -> tuple[int, int, int]:
    kv = config.num_kv_heads * config.head_dim
    return config.num_heads * config.head_dim, kv, kv


def moshi_key_map(config: Config) -> KeyMap:
    """Rules of :class:`Moshi` <- transformers' ``MoshiForConditionalGeneration``."""
    cfg = moshi_config(config)
    k, size = cfg.num_codebooks, cfg.codebook_size
    embeds = ("decoder.model.embed_tokens.weight", *(f"embed_tokens.{j}.weight" for j in range(2 * k)))
    return KeyMap((
        Fuse("embed.weight", embeds, (cfg.text_vocab + 1, *(size + 1,) * (2 * k))),
        Rename("temporal.norm.weight", "decoder.model.norm.weight"),
        Rename("text_head.weight", "decoder.lm_head.weight"),
        Rename("depth.text_embed.weight", "depth_decoder.text_embed_tokens.weight"),
        Rename("depth.code_embed.{j}.weight", "depth_decoder.embed_tokens.{j}.weight"),
        Rename("depth.input_proj.weight", "depth_decoder.input_projections.weight"),
        Rename("depth.heads.weight", "depth_decoder.lm_heads.weight"),
    )) + _layer_rules("temporal.blocks.{i}.", "decoder.model.layers.{i}.", _qkv_sizes(cfg.temporal), 0) + (
        _layer_rules("depth.layers.{i}.", "depth_decoder.layers.{i}.", _qkv_sizes(cfg.predictor), 1)
    ) + mimi_key_map(MIMI(config["audio_encoder_config"])).prefixed("audio_encoder.").under("audio_encoder.")


register_architecture(
    "MoshiForConditionalGeneration",
    parts={
        "moshi": Part(lambda c: Moshi(moshi_config(c)), moshi_key_map, export_config=moshi_hf_config),
        "audio_encoder": Part(lambda c: MimiTokenizer(MIMI(c["audio_encoder_config"])),
                              lambda c: mimi_key_map(MIMI(c["audio_encoder_config"])), prefix="audio_encoder."),
    },
    default_part="moshi",
)
