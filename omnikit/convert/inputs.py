"""``hf_inputs``: what a transformers processor returns -> the loaded model's forward arguments.

The conversion belongs to the part the model was loaded as (its :attr:`Part.inputs`), so
``model(**hf_inputs(model, processor(...)))`` returns what the transformers model returns for the
same inputs. Models built without :func:`load_hf` use the part whose ``export_config`` accepts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from omnikit.convert.architectures import origin_of
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["hf_inputs", "text_inputs"]


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError) as error:
        raise OmnikitTypeError(
            f"`inputs[{name!r}]` expected a tensor or nested list but got {type(value).__name__}"
        ) from error


def text_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_ids`` (and ``attention_mask``, 1 = token) -> ``input_ids`` and ``key_padding_mask``.

    Positions stay ``0..T-1`` as in a transformers forward without ``position_ids``, so valid
    positions of a left-padded batch get transformers' logits.
    """
    if "input_ids" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_ids' but got keys {sorted(inputs)}")
    device = next(model.parameters()).device
    ids = _as_tensor(inputs["input_ids"], "input_ids")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise OmnikitTypeError(f"`inputs['input_ids']` expected integer token ids but got {ids.dtype}")
    kwargs: dict[str, Any] = {"input_ids": ids.long().to(device)}
    mask = inputs.get("attention_mask")
    if mask is not None:
        mask = _as_tensor(mask, "attention_mask").to(device).bool()
        expected = tuple(kwargs["input_ids"].shape)
        if tuple(mask.shape) != expected:
            raise OmnikitValueError(f"`inputs['attention_mask']` expected shape {expected} but got {tuple(mask.shape)}")
        kwargs["key_padding_mask"] = mask
    return kwargs


def hf_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``model``'s forward equivalent to transformers' processor ``inputs``."""
    if not isinstance(inputs, Mapping):
        raise OmnikitTypeError(f"`inputs` expected a mapping (a processor's output) but got {type(inputs).__name__}")
    _, part = origin_of(model)
    if part.inputs is None:
        raise OmnikitValueError(f"hf_inputs has no input conversion for {type(model).__name__}")
    return part.inputs(model, inputs)
