"""``transformers`` ``Qwen2_5OmniToken2WavModel`` (checkpoint keys ``token2wav.*``) -> :class:`omnikit.audio.Token2Wav`.

Config map: :data:`TOKEN2WAV_CONFIG` (transformers' defaults for absent keys, which are omnikit's); key map:
:func:`token2wav_key_map`; both in :data:`TOKEN2WAV` (registered in :mod:`omnikit.convert.hub_qwen2_5_omni`).
The DiT's q/k/v projections are fused, its time MLP, AdaLN linears and MLP renamed; the ECAPA-TDNN
speaker encoder and the BigVGAN vocoder keep transformers' names.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omnikit.audio.bigvgan import BigVGANConfig
from omnikit.audio.token2wav import Token2Wav, Token2WavConfig
from omnikit.audio.token2wav_dit import DiTConfig
from omnikit.convert.architectures import Mapped
from omnikit.convert.configmap import ConfigMap, Constant, Derived, Field, Nested, Refuse
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.convert.qwen3_omni_code2wav import _same_names
from omnikit.utils.config import flat_names

__all__ = ["TOKEN2WAV", "TOKEN2WAV_CONFIG", "token2wav_key_map"]

#: omnikit DiT field <- transformers ``dit_config`` field, where the names differ.
_DIT_NAMES = {
    "dim": "hidden_size", "depth": "num_hidden_layers", "num_heads": "num_attention_heads",
    "xvector_dim": "enc_emb_dim", "speaker_dim": "enc_dim", "speaker_channels": "enc_channels",
    "speaker_kernel_sizes": "enc_kernel_sizes", "speaker_dilations": "enc_dilations",
    "speaker_attention_channels": "enc_attention_channels", "speaker_res2net_scale": "enc_res2net_scale",
    "speaker_se_channels": "enc_se_channels", "max_positions": "max_position_embeddings",
}


def _same_fields(config: Any, names: dict[str, str], skip: tuple[str, ...] = ()) -> tuple[Field, ...]:
    """One :class:`Field` per field of the default ``config`` (its value the default), named ``names.get(field)``
    in config.json; sequences read as tuples (of tuples). A nested config's fields are its flat keywords."""
    def cast(default: Any) -> Any:
        if not isinstance(default, tuple):
            return None
        return (lambda v: tuple(tuple(x) for x in v)) if default and isinstance(default[0], tuple) else tuple

    nested = {outer for outer, _ in getattr(config, "flat_fields", {}).values()}
    own = [f.name for f in fields(config) if f.name not in nested] + sorted(flat_names(type(config)))
    return tuple(Field(name, names.get(name, name), getattr(config, name), cast(getattr(config, name)))
                 for name in own if name not in skip)


_ROPE = "dit_config.rope_parameters.rope_type"
#: The DiT (``dit_config``); ``head_dim`` defaults to ``hidden_size // num_attention_heads``.
DIT = ConfigMap((
    Constant("model_type", "qwen2_5_omni_dit"), Refuse("rope_parameters.rope_type", ("default",),
                                                       ("rope_scaling.rope_type",), label=_ROPE),
    *_same_fields(DiTConfig(), _DIT_NAMES, ("head_dim", "rope_base", "backend")),
    Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]),
    Field("rope_base", "rope_parameters.rope_theta", DiTConfig().rope_base, float, ("rope_scaling.rope_theta",
                                                                                  "rope_theta")),
), target=DiTConfig)
#: The BigVGAN vocoder (``bigvgan_config``): transformers' names.
BIGVGAN = ConfigMap((Constant("model_type", "qwen2_5_omni_bigvgan"), *_same_fields(BigVGANConfig(), {})),
                    target=BigVGANConfig)
#: The :class:`Token2WavConfig` of a ``token2wav_config`` dict.
TOKEN2WAV_CONFIG = ConfigMap((
    Constant("model_type", "qwen2_5_omni_token2wav"), Nested("dit", "dit_config", DIT),
    Nested("vocoder", "bigvgan_config", BIGVGAN),
), target=Token2WavConfig)


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
TOKEN2WAV = Mapped(TOKEN2WAV_CONFIG, Token2Wav, token2wav_key_map)
