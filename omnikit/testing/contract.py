"""What a registered model exposes so the one contract suite (``tests/test_model_contract.py``) can run it.

A model implements ``contract_inputs(lengths, seed=0) -> ContractInputs``: a batch of
``len(lengths)`` items, item ``b`` being ``lengths[b]`` long along its time axis (ignored for
fixed-size inputs), padded to the longest. Optional attributes the suite checks when present:

- ``output_dim``: the last dim of the primary output;
- ``output_lengths(lengths) -> lengths``: exact length arithmetic of encoders;
- ``supports_streaming = True`` with ``stream_chunk`` (input steps per chunk): chunked == full,
  future input never changes past output, and (for decoders) one-token steps == full forward.

Inputs that slicing along the batch cannot split (media packed across the batch, as a Qwen-Omni
processor returns them: ``pixel_values`` of all images with their ``image_grid_thw``, audio clips
with their own padding) give ``item``: a callable that packs item ``b`` alone again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = ["ContractInputs", "export_dynamic_shapes", "primary_output"]


@dataclass
class ContractInputs:
    """Inputs for ``model(**kwargs)`` plus what the suite needs to slice them.

    Attributes:
        kwargs: forward keyword arguments; tensors are batch-first.
        lengths: ``(B,)`` valid length of each item along its time axis, or ``None`` when the
            model takes fixed-size inputs (no padding to test).
        time_dims: for each kwarg with a time axis, which dim it is (e.g. ``{"features": 2}``).
        lengths_kwarg: the kwarg that tells the model the valid lengths (``None`` if it needs none,
            as for causal decoders with right padding).
        item: ``b -> ContractInputs`` of item ``b`` alone, unpadded, for batches whose tensors are not
            all batch-first (packed media); ``None``: the suite slices every tensor at ``b``.
        padding_side: where the padding of each time axis sits (``"left"``: the valid steps are the
            last ``lengths[b]``, as in a batch prepared for generation).
        aligned_dims: axes as long as a time axis whose padding carries meaning (patch positions that
            mark padding): dynamic in export like ``time_dims``, but never overwritten with noise.
    """

    kwargs: dict[str, Any]
    lengths: torch.Tensor | None = None
    time_dims: dict[str, int] = field(default_factory=dict)
    lengths_kwarg: str | None = None
    item: Callable[[int], ContractInputs] | None = None
    padding_side: Literal["right", "left"] = "right"
    aligned_dims: dict[str, int] = field(default_factory=dict)

    def valid_start(self, size: int, valid: int) -> int:
        """Index of the first valid step of an item with ``valid`` steps on a time axis of ``size``."""
        return size - valid if self.padding_side == "left" else 0

    def padding_start(self, size: int, valid: int) -> int:
        """Index of the first padded step (``size - valid`` of them) of such an item."""
        return 0 if self.padding_side == "left" else valid


def primary_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensor the contract compares, and its per-item valid lengths if the output carries them.

    A Tensor is itself; an object with ``hidden_states`` gives that (and ``lengths``); a tuple gives
    its first element.
    """
    if isinstance(out, torch.Tensor):
        return out, None
    if hasattr(out, "hidden_states"):
        return out.hidden_states, getattr(out, "lengths", None)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], None
    raise TypeError(f"cannot find the primary output tensor in {type(out).__name__}")


def export_dynamic_shapes(inputs: ContractInputs, max_batch: int = 64) -> dict[str, Any]:
    """``dynamic_shapes`` for ``torch.export.export(model, (), inputs.kwargs, ...)``: a dynamic
    batch (dim 0) on every batched tensor and a dynamic time dim on every axis of ``time_dims``
    (its bounds left to export to find, as models have a shortest input), and on every ``aligned_dims`` axis."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    shapes: dict[str, Any] = {}
    for key, value in inputs.kwargs.items():
        spec = None
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            spec = {0: batch}
            for dims in (inputs.time_dims, inputs.aligned_dims):
                if key in dims:
                    spec[dims[key]] = torch.export.Dim.AUTO
        shapes[key] = spec
    return shapes
