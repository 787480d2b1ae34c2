"""``transformers`` ``Qwen2_5OmniToken2WavModel`` (checkpoint keys ``token2wav.*``) -> :class:`omnikit.audio.Token2Wav`.

Config: :func:`token2wav_config` (and back: :func:`token2wav_config_dict`); key map: :func:`token2wav_key_map`;
both in :data:`TOKEN2WAV` (registered in :mod:`omnikit.convert.hub_qwen2_5_omni`).
The DiT's q/k/v projections are fused, its time MLP, AdaLN linears and MLP renamed; the ECAPA-TDNN
speaker encoder and the BigVGAN vocoder keep transformers' names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from omnikit.audio.bigvgan import BigVGANConfig
from omnikit.audio.token2wav import Token2Wav, Token2WavConfig
from omnikit.audio.token2wav_dit import DiTConfig
from omnikit.convert.architectures import Mapped
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.convert.qwen3_omni_code2wav import _same_names
from omnikit.utils.checks import check_choice

__all__ = ["TOKEN2WAV", "token2wav_config", "token2wav_config_dict", "token2wav_key_map"]

#: omnikit DiT field <- transformers ``dit_config`` field, where the names differ.
_DIT_NAMES = {
    "dim": "hidden_size", "depth": "num_hidden_layers", "num_heads": "num_attention_heads",
    "xvector_dim": "enc_emb_dim", "speaker_dim": "enc_dim", "speaker_channels": "enc_channels",
    "speaker_kernel_sizes": "enc_kernel_sizes", "speaker_dilations": "enc_dilations",
    "speaker_attention_channels": "enc_attention_channels", "speaker_res2net_scale": "enc_res2net_scale",
    "speaker_se_channels": "enc_se_channels", "max_positions": "max_position_embeddings",
}
_TUPLES = ("look_ahead_layers", "look_backward_layers", "speaker_channels", "speaker_kernel_sizes",
           "speaker_dilations")


def _rope(dit: Mapping[str, Any]) -> Mapping[str, Any]:
    return dit.get("rope_parameters") or dit.get("rope_scaling") or {}


def token2wav_config(config: Mapping[str, Any]) -> Token2WavConfig:
    """The :class:`Token2WavConfig` of a ``token2wav_config`` dict (transformers' defaults for absent keys)."""
    dit, vocoder = dict(config.get("dit_config") or {}), dict(config.get("bigvgan_config") or {})
    check_choice(_rope(dit).get("rope_type", "default"), "dit_config.rope_parameters.rope_type", ("default",))
    defaults = DiTConfig()
    values: dict[str, Any] = {}
    for name in asdict(defaults):
        theirs = _DIT_NAMES.get(name, name)
        if theirs in dit:
            values[name] = tuple(dit[theirs]) if name in _TUPLES else dit[theirs]
    if "head_dim" not in dit:
        values["head_dim"] = values.get("dim", defaults.dim) // values.get("num_heads", defaults.num_heads)
    values["rope_base"] = float(_rope(dit).get("rope_theta", dit.get("rope_theta", defaults.rope_base)))
    values.pop("backend", None)
    bigvgan = {k: vocoder[k] for k in asdict(BigVGANConfig()) if k in vocoder}
    for key in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
        if key in bigvgan:
            bigvgan[key] = tuple(bigvgan[key])
    if "resblock_dilation_sizes" in bigvgan:
        bigvgan["resblock_dilation_sizes"] = tuple(tuple(d) for d in bigvgan["resblock_dilation_sizes"])
    return Token2WavConfig(DiTConfig(**values), BigVGANConfig(**bigvgan))


def token2wav_config_dict(config: Token2WavConfig) -> dict[str, Any]:
    """transformers' ``token2wav_config`` dict of ``config`` (the inverse of :func:`token2wav_config`)."""
    dit = {_DIT_NAMES.get(k, k): list(v) if isinstance(v, tuple) else v
           for k, v in asdict(config.dit).items() if k not in ("rope_base", "backend")}
    dit["rope_parameters"] = {"rope_type": "default", "rope_theta": config.dit.rope_base}
    vocoder = {k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
               for k, v in asdict(config.vocoder).items()}
    return {"model_type": "qwen2_5_omni_token2wav", "dit_config": {"model_type": "qwen2_5_omni_dit", **dit},
            "bigvgan_config": {"model_type": "qwen2_5_omni_bigvgan", **vocoder}}


def token2wav_key_map(config: Token2WavConfig) -> KeyMap:
    """omnikit key <- transformers key (relative to ``token2wav.``)."""
    dit, block = "code2wav_dit_model.", "code2wav_dit_model.transformer_blocks.{i}."
    inner = config.dit.num_heads * config.dit.head_dim
    return KeyMap((
        Rename("dit.time.fc1.{p}", dit + "time_embed.time_mlp.0.{p}"),
        Rename("dit.time.fc2.{p}", dit + "time_embed.time_mlp.2.{p}"),
        Rename("dit.code_embed.weight", dit + "text_embed.codec_embed.weight"),
        Rename("dit.input_proj.{p}", dit + "input_embed.proj.{p}"),
        Fuse("dit.blocks.{i}.attn.qkv.{p}", tuple(f"{block}attn.to_{x}.{{p}}" for x in "qkv"), (inner,) * 3),
        Rename("dit.blocks.{i}.attn.out.{p}", block + "attn.to_out.0.{p}"),
        Rename("dit.blocks.{i}.modulation.{p}", block + "attn_norm.linear.{p}"),
        Rename("dit.blocks.{i}.mlp.fc1.{p}", block + "ff.ff.0.{p}"),
        Rename("dit.blocks.{i}.mlp.fc2.{p}", block + "ff.ff.3.{p}"),
        Rename("dit.out_modulation.{p}", dit + "norm_out.linear.{p}"),
        Rename("dit.proj_out.{p}", dit + "proj_out.{p}"),
    )) + (
        KeyMap(_same_names("", 8)).prefixed(dit + "input_embed.spk_encoder.").under("dit.speaker_encoder.")
        + KeyMap(_same_names("", 8)).prefixed("code2wav_bigvgan_model.").under("vocoder.")
    )


#: load_hf's ``"token2wav"`` part of ``Qwen2_5OmniForConditionalGeneration`` and ``from_transformers`` of a
#: ``Qwen2_5OmniToken2WavModel`` (its ``token2wav(code, conditioning=, reference_mel=, noise=)`` then equals the
#: module's waveform for the same initial noise).
TOKEN2WAV = Mapped(token2wav_config, Token2Wav, token2wav_key_map)
