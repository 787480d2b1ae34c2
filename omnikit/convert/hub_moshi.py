"""Moshi from the Hub: transformers' ``MoshiForConditionalGeneration`` checkpoints as
:class:`omnikit.speech.moshi.Moshi`.

Part ``"moshi"`` (the default) is the whole model: the temporal transformer (``decoder.model.*``,
its gated MLP's ``fc1`` holding gate then up rows), the text head (``decoder.lm_head``), the text
and ``2K`` audio embeddings (``decoder.model.embed_tokens``, ``embed_tokens.{0..2K-1}``: the
assistant's ``K`` then the user's ``K``, stacked into one table), the depth decoder
(``depth_decoder.*``, per-codebook weights ``(K, out, in)``) and Mimi (``audio_encoder.*``).
Part ``"audio_encoder"`` loads Mimi alone. Config translation: :data:`MOSHI`.
"""

from __future__ import annotations

from dataclasses import replace

from omnikit.convert.architectures import Mapped, exporter, register_architecture
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Fields, Fixed, Nested, Refuse
from omnikit.convert.hub_mimi import CODEC, MIMI, mimi_key_map
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.layers.decoder import DecoderConfig
from omnikit.speech.moshi import Moshi, MoshiConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = ["MOSHI", "moshi_key_map"]


def _gate_up(ffn_dim: int, fields: Fields) -> int:
    if ffn_dim % 2:
        raise OmnikitValueError(f"Moshi ffn_dim={ffn_dim} expected even (gate and up halves)")
    return ffn_dim // 2


#: The fields of both Moshi transformers (the temporal one and the depth decoder).
_TRANSFORMER = ConfigMap((
    Refuse("hidden_act", ("silu",)), Field("dim", "hidden_size"), Field("depth", "num_hidden_layers"),
    Field("num_heads", "num_attention_heads"), Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]),
    Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]),
    Convert("mlp_hidden", "ffn_dim", _gate_up, lambda hidden, f: 2 * hidden), Field("norm_eps", "rms_norm_eps", 1e-8),
), target=DecoderConfig)
#: The temporal transformer: rotary, a sliding window (written as the context too; 3000 when unset).
_TEMPORAL = _TRANSFORMER + ConfigMap((
    Refuse("rope_parameters.rope_type", ("default",)),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float, ("rope_theta",)),
    Convert("sliding_window", ("sliding_window", "max_position_embeddings"), lambda window, _, f: window,
            lambda window, f: (window or 3000,) * 2, (None, None)),
    Fixed("mlp", "swiglu_fused"), Fixed("qk_norm", False), Fixed("qkv_bias", False), Fixed("out_bias", False),
    Fixed("norm", "rmsnorm"), Fixed("mrope_sections", None), Fixed("attention_chunk", None),
))
#: The per-codebook depth decoder (no rotary: ``rope_theta`` is read but not used, and not written; its
#: layers have their own MLP and no qk-norm whatever the config says).
_DEPTH = _TRANSFORMER + ConfigMap((
    Fixed("mlp", "swiglu_fused", checked=False), Fixed("qk_norm", False, checked=False),
    Convert("rope_base", "rope_parameters.rope_theta", lambda theta, f: float(theta), lambda base, f: None,
            10000.0, ("rope_theta",)),
    Fixed("sliding_window", None),
))
#: The :class:`MoshiConfig` of a transformers ``MoshiForConditionalGeneration`` ``config.json``.
MOSHI = ConfigMap((
    Constant("model_type", "moshi"), Nested("codec", "audio_encoder_config", MIMI), Nested("temporal", "", _TEMPORAL),
    Field("text_vocab", "vocab_size"), Fixed("text_pad_id", 0), Field("num_codebooks", "num_codebooks"),
    Derived("codebook_size", "audio_vocab_size", lambda f: f["codec"].codebook_size),
    Fixed("delays", lambda f: (0,) + (1,) * (f["num_codebooks"] - 1)),
    Fixed("frame_rate", lambda f: f["codec"].frame_rate),
    Nested("predictor", "depth_decoder_config", _DEPTH), Fixed("per_codebook_depth", True),
    # the depth decoder's config.json repeats these fields of the whole model
    *(Constant(f"depth_decoder_config.{theirs}", value) for theirs, value in (
        ("max_position_embeddings", lambda f: f["num_codebooks"]), ("sliding_window", lambda f: f["num_codebooks"]),
        ("num_codebooks", lambda f: f["num_codebooks"]), ("audio_vocab_size", lambda f: f["codebook_size"]),
        ("input_size", lambda f: f["temporal"].dim), ("vocab_size", lambda f: f["text_vocab"]))),
), target=MoshiConfig)


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


def moshi_key_map(cfg: MoshiConfig) -> KeyMap:
    """Rules of :class:`Moshi` <- transformers' ``MoshiForConditionalGeneration``."""
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
    ) + mimi_key_map(cfg.codec).prefixed("audio_encoder.").under("audio_encoder.")


#: ``save_hf`` of a :class:`Moshi` built by ``create_model`` (its delays resolved); ``None`` for a layout
#: transformers' Moshi cannot hold (other delays, a shared depth transformer, biases ...).
_EXPORT = exporter(MOSHI.write, Moshi, "MoshiForConditionalGeneration",
                   lambda model: replace(model.config, delays=model.delays))
register_architecture("MoshiForConditionalGeneration", default_part="moshi", parts={
    "moshi": Mapped(MOSHI, Moshi, moshi_key_map, _EXPORT).part(),
    "audio_encoder": CODEC.part("audio_encoder.", select=lambda c: c["audio_encoder_config"]),
})
