"""The inter-chunk recurrence of the chunked gated delta rule, one formulation per way of running it.

With ``S_i`` the state ``(d_k, d_v)`` entering chunk ``i`` (per batch item and head)::

    U_i = U0_i - W_i S_i        O_i = Q_i S_i + A_i U_i        S_{i+1} = e_i S_i + K_i^T U_i

(``U0, W`` from the chunk's triangular solve, ``Q`` the decayed queries, ``A`` the masked decayed
scores, ``K`` the keys decayed to the chunk's end, ``e`` the chunk's total decay). The loop over
the chunks runs:

- in eager mode, as a Python loop (autograd records it);
- under ``torch.export``, as one ``scan`` higher-order op: one program for every chunk count;
- under ``torch.compile``, as one opaque operator, ``omnikit::chunk_recurrence``, the same Python
  loop inside, with its backward (the recurrence run in reverse) another,
  ``omnikit::chunk_recurrence_backward``. Their output shapes follow their input shapes, so the
  graph holds no loop and every chunk count shares it. Inductor cannot take the ``scan`` here: it
  rewrites a ``scan`` into a ``while_loop`` whose body reads the loop index with ``.item()``, which
  Dynamo's shape environment allows only under ``fullgraph=True`` (or ``capture_scalar_outputs``),
  so a plain ``torch.compile(model)`` fails with ``DataDependentOutputException:
  aten._local_scalar_dense`` (torch 2.14).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._higher_order_ops.scan import scan

__all__ = ["chunk_recurrence"]


def _chunk_step(state: torch.Tensor, chunk: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: ``state (B, H, d_k, d_v)`` before it -> ``(state after it, outputs (B, H, C, d_v))``;
    ``chunk``: its ``U0, W, Q, A, K, e``."""
    u0, w, q_decayed, scores, k_to_end, end_decay = chunk
    u = u0 - w @ state
    out = q_decayed @ state + scores @ u
    return state * end_decay[..., None, None] + k_to_end.transpose(-1, -2) @ u, out


def _loop(state: torch.Tensor, chunks: Sequence[torch.Tensor],
          entering: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every chunk in turn -> ``(outputs (B, H, n, C, d_v), final state)``; ``entering`` collects
    the state before each chunk when given."""
    outputs = []
    for i in range(chunks[0].shape[2]):
        if entering is not None:
            entering.append(state)
        state, out = _chunk_step(state, [t[:, :, i] for t in chunks])
        outputs.append(out)
    return torch.stack(outputs, dim=2), state


@torch.library.custom_op("omnikit::chunk_recurrence", mutates_args=())
def _opaque(state: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, q_decayed: torch.Tensor, scores: torch.Tensor,
            k_to_end: torch.Tensor, end_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``-> (outputs, final state, state entering each chunk (B, H, n, d_k, d_v))`` (the last for the backward)."""
    entering: list[torch.Tensor] = []
    out, final = _loop(state, (u0, w, q_decayed, scores, k_to_end, end_decay), entering)
    return out, final, torch.stack(entering, dim=2)


@_opaque.register_fake
def _(state, u0, w, q_decayed, scores, k_to_end, end_decay):
    return u0.new_empty(u0.shape), state.new_empty(state.shape), state.new_empty(*u0.shape[:3], *state.shape[2:])


@torch.library.custom_op("omnikit::chunk_recurrence_backward", mutates_args=())
def _opaque_backward(
    entering: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, q_decayed: torch.Tensor, scores: torch.Tensor,
    k_to_end: torch.Tensor, end_decay: torch.Tensor, grad_out: torch.Tensor, grad_final: torch.Tensor,
) -> list[torch.Tensor]:
    """Gradients of ``(state, U0, W, Q, A, K, e)`` from those of the outputs and the final state: the
    recurrence's gradient run backwards over the chunks, then the per-chunk terms as batched products."""
    grad_after, grad_u = [], []  # per chunk: the gradient of the state after it, and of its writes U
    grad = grad_final
    for i in reversed(range(u0.shape[2])):
        g_out = grad_out[:, :, i]
        g_u = scores[:, :, i].transpose(-1, -2) @ g_out + k_to_end[:, :, i] @ grad
        grad_after.append(grad)
        grad_u.append(g_u)
        grad = (q_decayed[:, :, i].transpose(-1, -2) @ g_out + grad * end_decay[:, :, i, None, None]
                - w[:, :, i].transpose(-1, -2) @ g_u)
    grad_after, grad_u = torch.stack(grad_after[::-1], dim=2), torch.stack(grad_u[::-1], dim=2)
    u = u0 - w @ entering
    state_t = entering.transpose(-1, -2)
    return [grad, grad_u, -grad_u @ state_t, grad_out @ state_t,
            grad_out @ u.transpose(-1, -2), u @ grad_after.transpose(-1, -2), (entering * grad_after).sum((-1, -2))]


@_opaque_backward.register_fake
def _(entering, u0, w, q_decayed, scores, k_to_end, end_decay, grad_out, grad_final):
    return [t.new_empty(t.shape) for t in (grad_final, u0, w, q_decayed, scores, k_to_end, end_decay)]


def _setup(ctx, inputs, output) -> None:  # torch.library passes (ctx, inputs, output)
    ctx.save_for_backward(output[2], *inputs[1:])


def _backward(ctx, grad_out, grad_final, _grad_entering):
    entering, *chunks = ctx.saved_tensors
    grad_out = torch.zeros_like(chunks[0]) if grad_out is None else grad_out
    grad_final = torch.zeros_like(entering[:, :, 0]) if grad_final is None else grad_final
    return tuple(_opaque_backward(entering, *chunks, grad_out, grad_final))


_opaque.register_autograd(_backward, setup_context=_setup)


def chunk_recurrence(state: torch.Tensor, u0: torch.Tensor, w: torch.Tensor, q_decayed: torch.Tensor,
                     scores: torch.Tensor, k_to_end: torch.Tensor,
                     end_decay: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chunks in order from ``state``.

    Args:
        state: ``(B, H, d_k, d_v)`` before the first chunk.
        u0, w: ``(B, H, n, C, d_v)``, ``(B, H, n, C, d_k)``: each chunk's writes are ``U0 - W S``.
        q_decayed, k_to_end: ``(B, H, n, C, d_k)``: queries decayed from the chunk's start, keys to its end.
        scores: ``(B, H, n, C, C)`` decayed query-key scores, zero above the diagonal.
        end_decay: ``(B, H, n)`` each chunk's total decay.

    Returns:
        ``(outputs (B, H, n, C, d_v), final state (B, H, d_k, d_v))``.
    """
    chunks = (u0, w, q_decayed, scores, k_to_end, end_decay)
    if torch.compiler.is_exporting():
        state, out = scan(_chunk_step, state, chunks, dim=2)
        return out, state
    if torch.compiler.is_compiling():
        return _opaque(state, *chunks)[:2]
    return _loop(state, chunks)
