"""DAC from the Hub: transformers' ``DacModel`` checkpoints as :class:`omnikit.audio.dac.DacCodec`.

Part ``"codec"`` (the default). Codes equal transformers' ``encode(...).audio_codes`` exactly and
decoded audio its ``decode(audio_codes=...)``; every tensor keeps its published name (the Hub
checkpoints store the convolutions with the weight norm folded in). ``hf_inputs`` takes the
feature extractor's ``input_values (B, 1, S)`` (its ``padding_mask`` is ignored, as by ``DacModel``).
"""

from __future__ import annotations

from omnikit.audio.dac import DacCodec, DacConfig
from omnikit.convert.architectures import Mapped, exporter, preset, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Constant, Field
from omnikit.convert.hub_encodec import codec_inputs
from omnikit.convert.keymap import KeyMap, Rename

__all__ = ["DAC", "dac_key_map"]

#: The :class:`DacConfig` of a transformers ``DacModel`` ``config.json``.
DAC = ConfigMap((
    Constant("model_type", "dac"), Field("sample_rate", "sampling_rate"), Field("encoder_dim", "encoder_hidden_size"),
    Field("ratios", "downsampling_ratios", cast=tuple), Field("decoder_dim", "decoder_hidden_size"),
    Field("num_codebooks", "n_codebooks"), Field("codebook_size", "codebook_size"),
    Field("codebook_dim", "codebook_dim"),
), target=DacConfig)


def dac_key_map(config: DacConfig) -> KeyMap:
    """Every :class:`DacCodec` tensor is the checkpoint tensor of the same name (names 2 to 6 deep)."""
    patterns = (".".join(f"{{n{i}}}" for i in range(depth)) for depth in range(2, 7))
    return KeyMap(tuple(Rename(p, p) for p in patterns))


register_architecture("DacModel", default_part="codec", parts={"codec": Mapped(
    DAC, DacCodec, dac_key_map, exporter(DAC.write, DacCodec, "DacModel")).part(inputs=codec_inputs)})
register_transformers("DacModel", Mapped(DAC, preset("dac_44khz"), dac_key_map))
