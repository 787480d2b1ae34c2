"""The inter-chunk recurrence of the chunked gated delta rule, one formulation per way of running it.

With ``S_i`` the state ``(d_k, d_v)`` entering chunk ``i`` (per batch item and head)::

    S_{i+1} = e_i S_i + K_i^T (U0_i - W_i S_i)

(``U0, W (C, d_v), (C, d_k)`` from the chunk's triangular solve, ``K (C, d_k)`` the keys decayed to
the chunk's end, ``e`` the chunk's total decay). :func:`chunk_states` returns every ``S_i``; the
chunk outputs then follow in one batched product, outside the loop. The loop over the chunks runs:

- in eager mode, as a Python loop (autograd records it);
- under ``torch.export``, as one ``scan`` higher-order op: one program for every chunk count;
- under ``torch.compile``, as one opaque operator, ``omnikit::chunk_states``, with its backward
  (the reverse recurrence) another, ``omnikit::chunk_states_backward``. Their output shapes follow
  the input shapes, so the graph holds no loop and every chunk count shares it. Inductor cannot take
  the ``scan`` there: it rewrites it into a ``while_loop`` whose body reads the loop index with
  ``.item()``, which Dynamo's shape environment allows only under ``fullgraph=True`` (or
  ``capture_scalar_outputs``); a plain ``torch.compile(model)`` fails with
  ``DataDependentOutputException: aten._local_scalar_dense`` (torch 2.14).
"""

from __future__ import annotations

import torch
from torch._higher_order_ops.scan import scan

__all__ = ["chunk_states"]


def _step(state: torch.Tensor, chunk: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``state (B, H, d_k, d_v)`` entering a chunk -> ``(state after it, state entering it)``."""
    u0, w, k_to_end, end_decay = chunk
    return state * end_decay[..., None, None] + k_to_end.transpose(-1, -2) @ (u0 - w @ state), state


def _loop(state: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, k_to_end: torch.Tensor,
          end_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    entering = []
    for i in range(u0.shape[2]):
        state, before = _step(state, (u0[:, :, i], w[:, :, i], k_to_end[:, :, i], end_decay[:, :, i]))
        entering.append(before)
    return torch.stack(entering, dim=2), state


def _scan_step(state: torch.Tensor, chunk: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    after, before = _step(state, chunk)
    return after, before.clone()  # a scan output may not alias its carry


@torch.library.custom_op("omnikit::chunk_states", mutates_args=())
def _opaque(state: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, k_to_end: torch.Tensor,
            end_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    entering, final = _loop(state, u0, w, k_to_end, end_decay)
    return entering, final if u0.shape[2] else final.clone()  # an operator's output may not alias its input


@_opaque.register_fake
def _(state, u0, w, k_to_end, end_decay):
    batch, heads, chunks = u0.shape[:3]
    return state.new_empty(batch, heads, chunks, *state.shape[2:]), state.new_empty(state.shape)


@torch.library.custom_op("omnikit::chunk_states_backward", mutates_args=())
def _opaque_backward(
    entering: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, k_to_end: torch.Tensor, end_decay: torch.Tensor,
    grad_entering: torch.Tensor, grad_final: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``(state, u0, w, k_to_end, end_decay)`` from those of every entering state and the final one."""
    grad_after, grad_u = [], []  # per chunk: the gradient of the state after it, and of its writes U
    grad = grad_final
    for i in reversed(range(u0.shape[2])):
        g_u = k_to_end[:, :, i] @ grad
        grad_after.append(grad)
        grad_u.append(g_u)
        grad = grad_entering[:, :, i] + grad * end_decay[:, :, i, None, None] - w[:, :, i].transpose(-1, -2) @ g_u
    grad_after, grad_u = torch.stack(grad_after[::-1], dim=2), torch.stack(grad_u[::-1], dim=2)
    u = u0 - w @ entering
    return (grad, grad_u, -grad_u @ entering.transpose(-1, -2), u @ grad_after.transpose(-1, -2),
            (entering * grad_after).sum((-1, -2)))


@_opaque_backward.register_fake
def _(entering, u0, w, k_to_end, end_decay, grad_entering, grad_final):
    return (grad_final.new_empty(grad_final.shape), u0.new_empty(u0.shape), w.new_empty(w.shape),
            k_to_end.new_empty(k_to_end.shape), end_decay.new_empty(end_decay.shape))


def _setup(ctx, inputs, output) -> None:  # torch.library passes (ctx, inputs, output)
    _, u0, w, k_to_end, end_decay = inputs
    ctx.save_for_backward(output[0], u0, w, k_to_end, end_decay)


def _backward(ctx, grad_entering, grad_final):
    entering, u0, w, k_to_end, end_decay = ctx.saved_tensors
    grad_entering = torch.zeros_like(entering) if grad_entering is None else grad_entering
    grad_final = torch.zeros_like(entering[:, :, 0]) if grad_final is None else grad_final
    return _opaque_backward(entering, u0, w, k_to_end, end_decay, grad_entering, grad_final)


_opaque.register_autograd(_backward, setup_context=_setup)


def chunk_states(state: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, k_to_end: torch.Tensor,
                 end_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The state entering every chunk, and the final state.

    Args:
        state: ``(B, H, d_k, d_v)`` before the first chunk.
        u0, w: ``(B, H, n, C, d_v)``, ``(B, H, n, C, d_k)``: each chunk's writes are ``U0 - W S``.
        k_to_end: ``(B, H, n, C, d_k)`` keys decayed to their chunk's end.
        end_decay: ``(B, H, n)`` each chunk's total decay.

    Returns:
        ``(entering (B, H, n, d_k, d_v), final (B, H, d_k, d_v))``.
    """
    if torch.compiler.is_exporting():
        final, entering = scan(_scan_step, state, (u0, w, k_to_end, end_decay), dim=2)
        return entering, final
    if torch.compiler.is_compiling():
        return _opaque(state, u0, w, k_to_end, end_decay)
    return _loop(state, u0, w, k_to_end, end_decay)
