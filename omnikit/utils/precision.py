"""Dtype policy: cast a model to a low precision while keeping numerically sensitive modules in fp32.

A module opts out of low-precision casting by setting the class attribute ``keep_fp32 = True``
(norms, routers, rotary tables). Such a module must accept inputs of any floating dtype and
return outputs in the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["cast_model", "keeps_fp32", "model_dtype"]


def keeps_fp32(module: nn.Module) -> bool:
    """True when ``module`` asked to keep its parameters and buffers in float32."""
    return bool(getattr(module, "keep_fp32", False))


def _fp32_module_ids(model: nn.Module) -> set[int]:
    """ids of the modules that stay float32: those with ``keep_fp32`` and everything inside them."""
    protected: set[int] = set()
    for module in model.modules():
        if keeps_fp32(module):
            protected.update(id(m) for m in module.modules())
    return protected


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating parameters and buffers of ``model`` to ``dtype`` in place.

    Modules with ``keep_fp32 = True`` (and everything inside them) stay in float32.
    Integer buffers are never touched. Returns ``model``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` expected a floating torch.dtype but got {dtype!r}")
    protected = _fp32_module_ids(model)
    for module in model.modules():
        target = torch.float32 if id(module) in protected else dtype
        for key, param in module.named_parameters(recurse=False):
            if param.is_floating_point() and param.dtype != target:
                module._parameters[key] = nn.Parameter(param.data.to(target), requires_grad=param.requires_grad)
        for key, buf in module.named_buffers(recurse=False):
            if buf is not None and buf.is_floating_point() and buf.dtype != target:
                module._buffers[key] = buf.to(target)
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s tensors outside ``keep_fp32`` modules (float32 if it has none).

    The dtype :func:`cast_model` was last called with, which ``save_pretrained`` records.
    """
    protected = _fp32_module_ids(model)
    for module in model.modules():
        if id(module) in protected:
            continue
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if tensor is not None and tensor.is_floating_point():
                return tensor.dtype
    return torch.float32
