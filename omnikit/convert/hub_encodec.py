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
from omnikit.convert.architectures import Mapped, register_architecture
from omnikit.convert.configmap import ConfigMap, Convert, Derived, Field, Refuse
from omnikit.convert.keymap import KeyMap, Legacy, Rename
from omnikit.utils.checks import OmnikitValueError

__all__ = ["ENCODEC", "build_encodec", "encodec_key_map"]


#: The ``encodec`` package's hyper-parameters of a transformers ``EncodecModel`` ``config.json`` (the
#: SEANet keywords first, then the quantizer's).
ENCODEC = ConfigMap((
    Refuse("norm_type", ("weight_norm",)), Refuse("normalize", (False,), write_value=False),
    Refuse("chunk_length_s", (0,), write_value=False),
    Field("channels", "audio_channels", 1), Field("dimension", "hidden_size"), Field("n_filters", "num_filters"),
    Field("n_residual_layers", "num_residual_layers", 1), Field("ratios", "upsampling_ratios", cast=list),
    Field("kernel_size", "kernel_size", 7), Field("last_kernel_size", "last_kernel_size", 7),
    Field("residual_kernel_size", "residual_kernel_size", 3), Field("dilation_base", "dilation_growth_rate", 2),
    Field("causal", "use_causal_conv", True), Field("pad_mode", "pad_mode", "reflect"),
    Convert("true_skip", "use_conv_shortcut", lambda v, f: not v, lambda v, f: not v, default=True),
    Field("compress", "compress", 2), Field("lstm", "num_lstm_layers", 2),
    Field("trim_right_ratio", "trim_right_ratio", 1.0), Field("sample_rate", "sampling_rate"),
    Field("bandwidths", "target_bandwidths", cast=list), Field("codebook_size", "codebook_size"),
    Derived("codebook_dim", "codebook_dim", lambda f: f["dimension"]),
))
_SEANET = ("channels", "dimension", "n_filters", "n_residual_layers", "ratios", "kernel_size", "last_kernel_size",
           "residual_kernel_size", "dilation_base", "causal", "pad_mode", "true_skip", "compress", "lstm")


def build_encodec(fields: Mapping[str, Any]) -> EncodecTokenizer:
    """An :class:`EncodecTokenizer` over an ``encodec.EncodecModel`` with the hyper-parameters
    :data:`ENCODEC` read from a config.json."""
    encodec = require_encodec()
    seanet = {name: fields[name] for name in _SEANET}
    encoder = encodec.modules.SEANetEncoder(**seanet, norm="weight_norm")
    decoder = encodec.modules.SEANetDecoder(**seanet, norm="weight_norm", trim_right_ratio=fields["trim_right_ratio"])
    frame_rate = math.ceil(fields["sample_rate"] / math.prod(fields["ratios"]))
    bandwidths = fields["bandwidths"]
    bits = math.ceil(math.log2(fields["codebook_size"]))
    num_quantizers = int(1000 * bandwidths[-1] // (frame_rate * bits))
    quantizer = encodec.quantization.ResidualVectorQuantizer(
        dimension=fields["codebook_dim"], n_q=num_quantizers, bins=fields["codebook_size"],
    )
    model = encodec.EncodecModel(encoder, decoder, quantizer, bandwidths, fields["sample_rate"], seanet["channels"],
                                 normalize=False, segment=None)
    return EncodecTokenizer(model.eval(), bandwidths[0])


_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1",
                "bias": "bias"}


def encodec_key_map(fields: Mapping[str, Any]) -> KeyMap:
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


register_architecture("EncodecModel", default_part="codec",
                      parts={"codec": Mapped(ENCODEC, build_encodec, encodec_key_map).part(inputs=codec_inputs)})
