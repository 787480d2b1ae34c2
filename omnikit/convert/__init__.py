"""Interop: build omnikit modules from Hugging Face ``transformers`` and ``encodec`` modules.

``from_transformers(hf_module)`` dispatches on the class name of the module it is given; the
converter for each class lives in its own file here and is imported only when needed, so
``transformers`` is never imported by omnikit itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from omnikit.utils.checks import OmnikitTypeError

__all__ = ["converter", "from_encodec", "from_transformers", "supported_transformers_classes"]

#: transformers class name -> module holding its converter.
_CONVERTER_MODULES: dict[str, str] = {
    "Qwen3DecoderLayer": "omnikit.convert.qwen3",
    "WhisperEncoder": "omnikit.convert.whisper",
    "Qwen2_5OmniAudioEncoder": "omnikit.convert.qwen2_5_omni_audio",
    "Qwen3OmniMoeAudioEncoder": "omnikit.convert.qwen2_5_omni_audio",
    "Qwen3MoeSparseMoeBlock": "omnikit.convert.qwen_moe",
    "Qwen2MoeSparseMoeBlock": "omnikit.convert.qwen_moe",
    "Qwen3OmniMoeTalkerTextSparseMoeBlock": "omnikit.convert.qwen_moe",
    "Qwen3OmniMoeVisionEncoder": "omnikit.convert.qwen3_omni_vision",
    "Qwen3OmniMoeCode2Wav": "omnikit.convert.qwen3_omni_code2wav",
    "Qwen3OmniMoeTalkerForConditionalGeneration": "omnikit.convert.qwen3_omni_talker",
}
_CONVERTERS: dict[str, Callable[[Any], nn.Module]] = {}


def converter(class_name: str) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Register the function converting instances of the transformers class ``class_name``."""

    def decorator(fn: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        _CONVERTERS[class_name] = fn
        return fn

    return decorator


def supported_transformers_classes() -> list[str]:
    """Names of the transformers classes :func:`from_transformers` accepts."""
    return sorted(_CONVERTER_MODULES)


def from_transformers(hf_module: nn.Module) -> nn.Module:
    """An omnikit module with the hyper-parameters and weights of ``hf_module``.

    Outputs match the original's to float32 rounding. Supported classes:
    :func:`supported_transformers_classes`. The returned module is on the same device and dtype.
    """
    if not isinstance(hf_module, nn.Module):
        raise OmnikitTypeError(f"`hf_module` expected an instantiated nn.Module but got {type(hf_module).__name__}")
    name = type(hf_module).__name__
    if name not in _CONVERTER_MODULES:
        raise OmnikitTypeError(
            f"`hf_module` of class {name} has no omnikit converter; supported: {supported_transformers_classes()}"
        )
    importlib.import_module(_CONVERTER_MODULES[name])
    return _CONVERTERS[name](hf_module)


def from_encodec(model: Any, bandwidth: float | None = None) -> nn.Module:
    """An omnikit codec tokenizer wrapping ``encodec.EncodecModel`` (identical codes and audio).

    ``bandwidth`` (kbps) picks the number of codebooks; ``None`` keeps the model's own setting.
    """
    module = importlib.import_module("omnikit.convert.encodec")
    return module.from_encodec(model, bandwidth=bandwidth)
