"""DAC from the Hub: transformers' ``DacModel`` checkpoints as :class:`omnikit.audio.dac.DacCodec`.

Part ``"codec"`` (the default). Codes equal transformers' ``encode(...).audio_codes`` exactly and
decoded audio its ``decode(audio_codes=...)``; every tensor keeps its published name (the Hub
checkpoints store the convolutions with the weight norm folded in). ``hf_inputs`` takes the
feature extractor's ``input_values (B, 1, S)`` (its ``padding_mask`` is ignored, as by ``DacModel``).
"""

from __future__ import annotations

from torch import nn

from omnikit.audio.dac import DacCodec, DacConfig
from omnikit.convert.architectures import Config, Mapped, Part, preset, register_architecture, register_transformers
from omnikit.convert.hub_encodec import codec_inputs
from omnikit.convert.keymap import KeyMap, Rename

__all__ = ["dac_config", "dac_export_config", "dac_key_map"]


def dac_config(config: Config) -> DacConfig:
    """The :class:`DacConfig` of a transformers ``DacModel`` ``config.json``."""
    return DacConfig(
        sample_rate=config["sampling_rate"], encoder_dim=config["encoder_hidden_size"],
        ratios=tuple(config["downsampling_ratios"]), decoder_dim=config["decoder_hidden_size"],
        num_codebooks=config["n_codebooks"], codebook_size=config["codebook_size"],
        codebook_dim=config["codebook_dim"],
    )


def dac_export_config(model: nn.Module) -> Config | None:
    """The ``config.json`` of a :class:`DacCodec` (``None`` for any other module)."""
    if not isinstance(model, DacCodec):
        return None
    c = model.config
    return {
        "architectures": ["DacModel"], "model_type": "dac", "sampling_rate": c.sample_rate,
        "encoder_hidden_size": c.encoder_dim, "downsampling_ratios": list(c.ratios),
        "decoder_hidden_size": c.decoder_dim, "n_codebooks": c.num_codebooks, "codebook_size": c.codebook_size,
        "codebook_dim": c.codebook_dim,
    }


def dac_key_map(config: Config) -> KeyMap:
    """Every :class:`DacCodec` tensor is the checkpoint tensor of the same name (names 2 to 6 deep)."""
    patterns = (".".join(f"{{n{i}}}" for i in range(depth)) for depth in range(2, 7))
    return KeyMap(tuple(Rename(p, p) for p in patterns))


register_architecture(
    "DacModel",
    parts={"codec": Part(lambda c: DacCodec(dac_config(c)), dac_key_map, inputs=codec_inputs,
                         export_config=dac_export_config)},
    default_part="codec",
)
register_transformers("DacModel", Mapped(dac_config, preset("dac_44khz"), dac_key_map))
