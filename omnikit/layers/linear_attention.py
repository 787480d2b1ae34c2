"""Gated DeltaNet linear attention (Yang et al., 2024), the linear layer of Qwen3-Next / Qwen3.5.

Per head, with a state ``S`` of shape ``(d_k, d_v)``, decay ``alpha_t = exp(g_t)`` and write
strength ``beta_t``::

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = S_t^T q_t

:func:`gated_delta_rule_recurrent` runs this literally, one step at a time (the reference, and
the decoding path). :func:`gated_delta_rule_chunked` computes the same outputs chunk by chunk:
inside a chunk the recurrence is solved in closed form with one unit-triangular solve, so the
work is matrix products and the loop runs ``T / chunk_size`` times. On CUDA,
:func:`gated_delta_rule` uses flash-linear-attention's kernel when the ``fla`` package is present.

Inference memory is the fixed-size state: :class:`GatedDeltaNet` streams with ``(B, H, d_k, d_v)``
plus the short convolution's last inputs, whatever the sequence length.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.chunk_recurrence import chunk_recurrence
from omnikit.layers.conv import CausalConv1d
from omnikit.layers.norm import RMSNorm
from omnikit.streaming import StreamingModule, StreamingState
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_tensor

__all__ = [
    "GatedDeltaNet",
    "GatedDeltaNetState",
    "fla_available",
    "gated_delta_rule",
    "gated_delta_rule_chunked",
    "gated_delta_rule_recurrent",
]


def gated_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step gated delta rule, computed in float32.

    Args:
        q, k: ``(B, H, T, d_k)`` (normalised and scaled by the caller).
        v: ``(B, H, T, d_v)``.
        g: ``(B, H, T)`` log decay (``<= 0``).
        beta: ``(B, H, T)`` write strength in ``[0, 1]``.
        initial_state: ``(B, H, d_k, d_v)`` state before the first step (zeros by default).

    Returns:
        ``(o, state)``: outputs ``(B, H, T, d_v)`` in ``v``'s dtype and the final float32 state.
    """
    batch, heads, length, d_k = k.shape
    state = k.new_zeros(batch, heads, d_k, v.shape[-1], dtype=torch.float32) if initial_state is None \
        else initial_state.float()
    q, k, v, g, beta = q.float(), k.float(), v.float(), g.float(), beta.float()
    outputs = []
    for t in range(length):
        k_t = k[:, :, t]
        state = state * g[:, :, t, None, None].exp()
        error = v[:, :, t] - torch.einsum("bhkv,bhk->bhv", state, k_t)
        state = state + beta[:, :, t, None, None] * k_t[..., :, None] * error[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, :, t]))
    out = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape, dtype=torch.float32)
    return out.to(v.dtype), state


def gated_delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule in chunks of ``chunk_size`` steps (same arguments and results as
    :func:`gated_delta_rule_recurrent`).

    Within a chunk (cumulative log decay ``c_i``, ``D_ij = exp(c_i - c_j)`` for ``j <= i``) the
    writes ``u_i = beta_i (v_i - alpha_i S_{i-1}^T k_i)`` satisfy ``(I + A) U = diag(beta) V -
    diag(beta e^c) K S_0`` with ``A = tril(diag(beta) K K^T * D, -1)``; then
    ``O = diag(e^c) Q S_0 + (Q K^T * D) U`` and ``S_C = e^{c_C} S_0 + (K * e^{c_C - c})^T U``.
    """
    check_positive(chunk_size, "chunk_size")
    batch, heads, length, d_k = k.shape
    d_v = v.shape[-1]
    pad = (-length) % chunk_size  # padded steps: no decay (g=0), no write (beta=0)
    n = (length + pad) // chunk_size

    def chunks(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t.float(), (0, 0, 0, pad) if t.ndim == 4 else (0, pad))
        return t.reshape(batch, heads, n, chunk_size, *t.shape[3:])

    qc, kc, vc, gc, bc = chunks(q), chunks(k), chunks(v), chunks(g), chunks(beta)
    c = gc.cumsum(-1)  # (B, H, n, C) cumulative log decay inside each chunk
    lower = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=k.device).tril()
    decay = torch.where(lower, c[..., :, None] - c[..., None, :], float("-inf")).exp()  # D_ij, 0 for j > i
    a = (bc[..., :, None] * (kc @ kc.transpose(-1, -2)) * decay).tril(-1)
    eye = torch.eye(chunk_size, device=k.device)
    rhs = torch.cat([bc[..., None] * vc, (bc * c.exp())[..., None] * kc], dim=-1)
    u0, w = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True).split([d_v, d_k], -1)
    state = k.new_zeros(batch, heads, d_k, d_v, dtype=torch.float32) if initial_state is None \
        else initial_state.float()
    out, state = chunk_recurrence(state, u0, w, qc * c.exp()[..., None], (qc @ kc.transpose(-1, -2)) * decay,
                                  kc * (c[..., -1:] - c).exp()[..., None], c[..., -1].exp())
    return out.reshape(batch, heads, n * chunk_size, d_v)[:, :, :length].to(v.dtype), state


@functools.cache
def _fla_chunk_gated_delta_rule():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        return None
    return chunk_gated_delta_rule


def fla_available(device: torch.device) -> bool:
    """True when flash-linear-attention's gated delta rule kernel can run on ``device`` (CUDA)."""
    return device.type == "cuda" and _fla_chunk_gated_delta_rule() is not None


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule (arguments of :func:`gated_delta_rule_recurrent`) on the best path.

    ``backend``: ``"torch"`` (chunked form, one recurrent step for single-token calls), ``"fla"``
    (flash-linear-attention on CUDA) or ``"auto"`` (``"fla"`` when available).
    """
    check_choice(backend, "backend", ("auto", "torch", "fla"))
    if backend == "auto":
        backend = "fla" if fla_available(q.device) else "torch"
    if backend == "fla":
        if not fla_available(q.device):
            raise OmnikitValueError("backend='fla' needs the flash-linear-attention package and a CUDA device")
        out, state = _fla_chunk_gated_delta_rule()(
            *(t.transpose(1, 2) for t in (q, k, v, g, beta)), scale=1.0, initial_state=initial_state,
            output_final_state=True,
        )
        return out.transpose(1, 2), state
    if q.shape[2] == 1:
        return gated_delta_rule_recurrent(q, k, v, g, beta, initial_state)
    return gated_delta_rule_chunked(q, k, v, g, beta, initial_state, chunk_size)


@dataclass
class GatedDeltaNetState(StreamingState):
    """The recurrent state ``(B, H_v, d_k, d_v)`` float32 (the convolution keeps its own inputs)."""

    batch_size: int
    recurrent: torch.Tensor | None = None


class GatedDeltaNet(StreamingModule[GatedDeltaNetState]):
    """Gated DeltaNet token mixer (Qwen3-Next layout): ``(B, T, dim) -> (B, T, dim)``, causal.

    ``q, k, v`` come from one projection and a causal depthwise convolution with SiLU; ``q`` and
    ``k`` are L2-normalised (``q`` scaled by ``d_k^-1/2``); ``beta = sigmoid(b)``; the decay is
    ``g = -exp(A_log) * softplus(a + dt_bias)``; the output is ``RMSNorm(o) * silu(z)`` projected back.

    Args:
        dim: model width.
        num_heads: query/key heads.
        head_dim: ``d_k`` (default ``dim // num_heads``).
        num_v_heads: value heads, a multiple of ``num_heads`` (default ``num_heads``).
        v_head_dim: ``d_v`` (default ``head_dim``).
        conv_size: kernel of the short causal convolution.
        chunk_size: chunk length of the chunked form.
        backend: ``"auto"``, ``"torch"`` or ``"fla"`` (see :func:`gated_delta_rule`).

    Inside ``with layer.streaming(B):`` every call continues the sequence from a fixed-size state.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int | None = None,
        *,
        num_v_heads: int | None = None,
        v_head_dim: int | None = None,
        conv_size: int = 4,
        chunk_size: int = 64,
        norm_eps: float = 1e-6,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_heads, "num_heads")
        head_dim = head_dim or dim // num_heads
        num_v_heads = num_v_heads or num_heads
        v_head_dim = v_head_dim or head_dim
        for value, name in ((head_dim, "head_dim"), (num_v_heads, "num_v_heads"), (v_head_dim, "v_head_dim"),
                            (conv_size, "conv_size"), (chunk_size, "chunk_size")):
            check_positive(value, name)
        if num_v_heads % num_heads:
            raise OmnikitValueError(f"`num_v_heads` ({num_v_heads}) must be a multiple of `num_heads` ({num_heads})")
        check_choice(backend, "backend", ("auto", "torch", "fla"))
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.num_v_heads, self.v_head_dim, self.chunk_size, self.backend = num_v_heads, v_head_dim, chunk_size, backend
        qkv = 2 * num_heads * head_dim + num_v_heads * v_head_dim
        self.qkv = nn.Linear(dim, qkv, bias=False)
        self.conv = CausalConv1d(qkv, qkv, conv_size, groups=qkv, bias=False)
        self.gate = nn.Linear(dim, num_v_heads * v_head_dim, bias=False)  # z
        self.beta_decay = nn.Linear(dim, 2 * num_v_heads, bias=False)  # b, a
        self.A_log = nn.Parameter(torch.empty(num_v_heads).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(torch.ones(num_v_heads))
        self.norm = RMSNorm(v_head_dim, norm_eps)
        self.out = nn.Linear(num_v_heads * v_head_dim, dim, bias=False)

    def init_streaming_state(self, batch_size: int) -> GatedDeltaNetState:
        return GatedDeltaNetState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, T, dim) -> (B, T, dim)``."""
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        batch, length, _ = x.shape
        qkv = F.silu(self.conv(self.qkv(x).transpose(1, 2))).transpose(1, 2)
        q, k, v = qkv.split([self.num_heads * self.head_dim] * 2 + [self.num_v_heads * self.v_head_dim], dim=-1)
        q, k = (t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k))
        q = F.normalize(q.float(), dim=-1) * self.head_dim**-0.5
        k = F.normalize(k.float(), dim=-1)
        groups = self.num_v_heads // self.num_heads
        if groups > 1:
            q, k = q.repeat_interleave(groups, dim=1), k.repeat_interleave(groups, dim=1)
        v = v.reshape(batch, length, self.num_v_heads, self.v_head_dim).transpose(1, 2)
        b, a = self.beta_decay(x).float().transpose(1, 2).chunk(2, dim=1)  # (B, H_v, T) each
        beta = b.sigmoid()
        g = -self.A_log.float().exp()[:, None] * F.softplus(a + self.dt_bias.float()[:, None])
        state = self.streaming_state
        if state is not None:
            state.check_batch(batch)
        initial = None if state is None else state.recurrent
        o, final = gated_delta_rule(q, k, v, g, beta, initial, chunk_size=self.chunk_size, backend=self.backend)
        if state is not None:
            state.recurrent = final
        gate = self.gate(x).view(batch, length, self.num_v_heads, self.v_head_dim)
        o = self.norm(o.transpose(1, 2)) * F.silu(gate)
        return self.out(o.reshape(batch, length, -1))

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, v_heads={self.num_v_heads}, "
            f"v_head_dim={self.v_head_dim}, chunk={self.chunk_size}, backend={self.backend!r}"
        )
