"""Build a module with its parameters on the meta device and its buffers real.

Under :func:`meta_parameters`, every parameter a module registers moves to the meta device as
it is registered, so weight initialisation that follows runs on meta tensors (no memory, no
time), while buffers computed in ``__init__`` (rotary frequencies, sinusoid tables, mel filters)
keep their values: they are not in checkpoints, so loading could not restore them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["meta_parameters"]


@contextmanager
def meta_parameters() -> Iterator[None]:
    """Within the block, parameters registered by any module are created on the meta device."""
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
