"""What a registered model exposes so the one contract suite (``tests/test_model_contract.py``) can run it.

A model implements ``contract_inputs(lengths, seed=0) -> ContractInputs``: a batch of
``len(lengths)`` items, item ``b`` being ``lengths[b]`` long along its time axis (ignored for
fixed-size inputs), padded to the longest. Optional attributes the suite checks when present:

- ``output_dim``: the last dim of the primary output;
- ``output_lengths(lengths) -> lengths``: exact length arithmetic of encoders;
- ``supports_streaming = True`` with ``stream_chunk`` (input steps per chunk): chunked == full,
  future input never changes past output, and (for decoders) one-token steps == full forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ContractInputs", "primary_output"]


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
    """

    kwargs: dict[str, Any]
    lengths: torch.Tensor | None = None
    time_dims: dict[str, int] = field(default_factory=dict)
    lengths_kwarg: str | None = None


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
