"""Sampling a flow-matching model: the time grid and the fixed-step ODE solver Qwen2.5-Omni's token2wav uses.

The model predicts a velocity ``v(t, x)``; integrating ``dx/dt = v`` from noise at ``t = 0`` to
``t = 1`` gives the sample. Times follow a "sway" schedule (Chen et al., F5-TTS, 2024):
``t + s * (cos(pi t / 2) - 1 + t)`` over ``steps`` evenly spaced points, which for ``s < 0``
spends more steps near ``t = 0``. Each interval takes one step of Kutta's 3/8 rule (a fourth-order
Runge-Kutta method, four velocity evaluations).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from omnikit.utils.checks import check_int_in_range

__all__ = ["rk4_integrate", "sway_times"]


def sway_times(steps: int, sway: float | None, *, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(steps,)`` times from 0 to 1: evenly spaced, then swayed by ``sway`` (None: left even)."""
    check_int_in_range(steps, "steps", 2)
    times = torch.linspace(0, 1, steps, device=device, dtype=dtype)
    if sway is not None:
        times = times + sway * (torch.cos(math.pi / 2 * times) - 1 + times)
    return times


def rk4_integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                  times: torch.Tensor) -> torch.Tensor:
    """``x`` at ``times[-1]``, integrated from ``times[0]`` by one 3/8-rule step per interval.

    ``velocity(t, x)`` takes a 0-dim time and ``x``'s shape and returns ``dx/dt`` of that shape.
    """
    third = 1 / 3
    for start, end in itertools.pairwise(times):
        step = end - start
        k1 = velocity(start, x)
        k2 = velocity(start + step * third, x + step * k1 * third)
        k3 = velocity(start + step * (2 / 3), x + step * (k2 - k1 * third))
        k4 = velocity(end, x + step * (k1 - k2 + k3))
        x = x + (k1 + 3 * (k2 + k3) + k4) * step / 8
    return x
