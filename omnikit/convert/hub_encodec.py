"""EnCodec from the Hub: transformers' ``EncodecModel`` checkpoints as omnikit codec tokenizers.

The model is rebuilt with the ``encodec`` package (the reference implementation, same layers in
the same order) and wrapped in :class:`omnikit.audio.encodec_codec.EncodecTokenizer`, so codes
and decoded audio are the package's. Part ``"codec"`` (the default). Convolutions are weight
normalised: transformers 5 writes ``conv.parametrizations.weight.original0/1``, older published
checkpoints ``conv.weight_g/weight_v``; both load. Like transformers' ``encode`` without a
``bandwidth``, the codec runs at the config's first target bandwidth (set ``tokenizer.bandwidth``
to change it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from omnikit.audio.encodec_codec import EncodecTokenizer, require_encodec
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.keymap import KeyMap, Legacy, Rename
from omnikit.utils.checks import OmnikitValueError

__all__ = ["build_encodec", "encodec_key_map"]


def build_encodec(config: Config) -> EncodecTokenizer:
    """An :class:`EncodecTokenizer` over an ``encodec.EncodecModel`` with ``config``'s hyper-parameters."""
    encodec = require_encodec()
    if config.get("norm_type", "weight_norm") != "weight_norm" or config.get("normalize") or config.get(
            "chunk_length_s"):
        raise OmnikitValueError(
            "only EnCodec configs with norm_type='weight_norm', normalize=False and no chunking (the 24 kHz "
            "models) load"
        )
    seanet = dict(
        channels=config.get("audio_channels", 1), dimension=config["hidden_size"], n_filters=config["num_filters"],
        n_residual_layers=config.get("num_residual_layers", 1), ratios=list(config["upsampling_ratios"]),
        norm="weight_norm", kernel_size=config.get("kernel_size", 7),
        last_kernel_size=config.get("last_kernel_size", 7),
        residual_kernel_size=config.get("residual_kernel_size", 3), dilation_base=config.get("dilation_growth_rate", 2),
        causal=config.get("use_causal_conv", True), pad_mode=config.get("pad_mode", "reflect"),
        true_skip=not config.get("use_conv_shortcut", True), compress=config.get("compress", 2),
        lstm=config.get("num_lstm_layers", 2),
    )
    encoder = encodec.modules.SEANetEncoder(**seanet)
    decoder = encodec.modules.SEANetDecoder(**seanet, trim_right_ratio=config.get("trim_right_ratio", 1.0))
    frame_rate = math.ceil(config["sampling_rate"] / math.prod(config["upsampling_ratios"]))
    bandwidths = list(config["target_bandwidths"])
    bits = math.ceil(math.log2(config["codebook_size"]))
    num_quantizers = int(1000 * bandwidths[-1] // (frame_rate * bits))
    quantizer = encodec.quantization.ResidualVectorQuantizer(
        dimension=config.get("codebook_dim") or config["hidden_size"], n_q=num_quantizers, bins=config["codebook_size"],
    )
    model = encodec.EncodecModel(encoder, decoder, quantizer, bandwidths, config["sampling_rate"], seanet["channels"],
                                 normalize=False, segment=None)
    return EncodecTokenizer(model.eval(), bandwidths[0])


_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1",
                "bias": "bias"}


def encodec_key_map(config: Config) -> KeyMap:
    """Rules of the ``encodec`` package's model (under ``model.``) <- transformers' ``EncodecModel``."""
    rules: list[Any] = []
    for ours_conv, theirs_conv in (("conv.conv", "conv"), ("convtr.convtr", "conv")):
        for within in ("", "block.{j}.", "shortcut."):
            for ours_param, theirs_param in _WEIGHT_NORM.items():
                ours = f"model.{{s}}.model.{{n}}.{within}{ours_conv}.{ours_param}"
                rules.append(Rename(ours, f"{{s}}.layers.{{n}}.{within}{theirs_conv}.{theirs_param}"))
            if ours_conv == "conv.conv":
                for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
                    rules.append(Legacy(f"{{s}}.layers.{{n}}.{within}conv.{old}",
                                        f"{{s}}.layers.{{n}}.{within}conv.parametrizations.weight.{new}"))
    rules += [
        Rename("model.{s}.model.{n}.lstm.{p}", "{s}.layers.{n}.lstm.{p}"),
        Rename("model.quantizer.vq.layers.{i}._codebook.{p}", "quantizer.layers.{i}.codebook.{p}"),
    ]
    return KeyMap(tuple(rules))


def codec_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_values (B, C, S)`` (the feature extractor's output) -> ``wav``."""
    if "input_values" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_values' but got keys {sorted(inputs)}")
    return {"wav": torch.as_tensor(inputs["input_values"])}


register_architecture(
    "EncodecModel", parts={"codec": Part(build_encodec, encodec_key_map, inputs=codec_inputs)}, default_part="codec",
)
