"""Build a module with its parameters on the meta device and its buffers real.

Under :func:`meta_parameters`, every parameter a module registers moves to the meta device as
it is registered, so weight initialisation that follows runs on meta tensors (no memory, no
time), while buffers computed in ``__init__`` (rotary frequencies, sinusoid tables, mel filters)
keep their values: they are not in checkpoints, so loading could not restore them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["meta_parameters"]


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


def _skip_on_meta(init: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor if tensor.is_meta else init(tensor, *args, **kwargs)

    return wrapper


@contextmanager
def meta_parameters() -> Iterator[None]:
    """Within the block, parameters registered by any module are created on the meta device, and
    ``torch.nn.init`` functions return meta tensors untouched (torch runs them slowly on meta)."""
    original = nn.Module.register_parameter
    inits = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    for name, init in inits.items():
        setattr(nn.init, name, _skip_on_meta(init))
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
        for name, init in inits.items():
            setattr(nn.init, name, init)
