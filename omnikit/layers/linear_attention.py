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

Packed sequences: ``resets`` (``True`` at the first step of every sample) zero the state before
that step in both forms, so a packed row equals its samples run alone; :class:`GatedDeltaNet`
takes ``cu_seqlens`` and resets its short convolution at the same boundaries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.chunk_recurrence import chunk_recurrence
from omnikit.layers.linear import Linear
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
    "gated_delta_rule_transition",
    "l2_normalize",
    "resets_from_cu_seqlens",
]

ProjectionLayout = Literal["split", "fused"]


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim (the flash-linear-attention / transformers form)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def resets_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """``(1, length)`` bool, True at the first step of every sequence packed by ``cu_seqlens`` ``(N+1,)``."""
    resets = torch.zeros(1, length, dtype=torch.bool, device=cu_seqlens.device)
    starts = cu_seqlens[:-1].long()
    return resets.index_fill(1, starts[starts < length], True)


def gated_delta_rule_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step gated delta rule, computed in float32.

    Args:
        q, k: ``(B, H, T, d_k)`` (normalised and scaled by the caller).
        v: ``(B, H, T, d_v)``.
        g: ``(B, H, T)`` log decay (``<= 0``).
        beta: ``(B, H, T)`` write strength in ``[0, 1]``.
        initial_state: ``(B, H, d_k, d_v)`` state before the first step (zeros by default).
        resets: ``(B, T)`` bool, True where a new sequence starts: the state is zeroed before that step.

    Returns:
        ``(o, state)``: outputs ``(B, H, T, d_v)`` in ``v``'s dtype and the final float32 state.
    """
    batch, heads, length, d_k = k.shape
    state = k.new_zeros(batch, heads, d_k, v.shape[-1], dtype=torch.float32) if initial_state is None \
        else initial_state.float()
    q, k, v, g, beta = q.float(), k.float(), v.float(), g.float(), beta.float()
    decay = g.exp() if resets is None else g.exp() * (~resets[:, None]).float()
    outputs = []
    for t in range(length):
        k_t = k[:, :, t]
        state = state * decay[:, :, t, None, None]
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
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule in chunks of ``chunk_size`` steps (same arguments and results as
    :func:`gated_delta_rule_recurrent`).

    Within a chunk (cumulative log decay ``c_i``, ``D_ij = exp(c_i - c_j)`` for ``j <= i``) the
    writes ``u_i = beta_i (v_i - alpha_i S_{i-1}^T k_i)`` satisfy ``(I + A) U = diag(beta) V -
    diag(beta e^c) K S_0`` with ``A = tril(diag(beta) K K^T * D, -1)``; then
    ``O = diag(e^c) Q S_0 + (Q K^T * D) U`` and ``S_C = e^{c_C} S_0 + (K * e^{c_C - c})^T U``.

    With ``resets`` every term is kept only between steps of the same sequence: ``D_ij`` where ``i``
    and ``j`` are, the ``S_0`` terms where no sequence started since the chunk began, the keys of the
    end state where they belong to the chunk's last sequence. The log decays are never altered, so
    a packed row costs what an unpacked one does and loses no precision.
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
    start_decay, end_decay = c.exp(), (c[..., -1:] - c).exp()  # from the chunk's start / to its end
    if resets is not None:
        same, carry, last = _segment_masks(resets, pad, n, chunk_size)
        decay, start_decay, end_decay = decay * same, start_decay * carry, end_decay * last
    a = (bc[..., :, None] * (kc @ kc.transpose(-1, -2)) * decay).tril(-1)
    eye = torch.eye(chunk_size, device=k.device)
    rhs = torch.cat([bc[..., None] * vc, (bc * start_decay)[..., None] * kc], dim=-1)
    u0, w = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True).split([d_v, d_k], -1)
    state = k.new_zeros(batch, heads, d_k, d_v, dtype=torch.float32) if initial_state is None \
        else initial_state.float()
    chunk_decay = c[..., -1].exp() if resets is None else c[..., -1].exp() * carry[..., -1]
    out, state = chunk_recurrence(state, u0, w, qc * start_decay[..., None], (qc @ kc.transpose(-1, -2)) * decay,
                                  kc * end_decay[..., None], chunk_decay)
    return out.reshape(batch, heads, n * chunk_size, d_v)[:, :, :length].to(v.dtype), state


def _segment_masks(
    resets: torch.Tensor, pad: int, n: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``resets (B, T)``: ``same (B, 1, n, C, C)`` (steps i, j of a chunk in one sequence), ``carry
    (B, 1, n, C)`` (no sequence started between the chunk's start and the step) and ``last (B, 1, n, C)``
    (the step belongs to the chunk's last sequence), as float masks."""
    batch = resets.shape[0]
    starts = F.pad(resets.long(), (0, pad))  # padded steps continue the last sequence
    segment = starts.cumsum(-1).view(batch, 1, n, chunk_size)
    before = segment[..., :1] - starts.view(batch, 1, n, chunk_size)[..., :1]  # sequence entering the chunk
    same = (segment[..., :, None] == segment[..., None, :]).float()
    return same, (segment == before).float(), (segment == segment[..., -1:]).float()


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
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule (arguments of :func:`gated_delta_rule_recurrent`) on the best path.

    ``backend``: ``"torch"`` (chunked form, one recurrent step for single-token calls), ``"fla"``
    (flash-linear-attention on CUDA) or ``"auto"`` (``"fla"`` when available).
    ``cu_seqlens``: ``(N+1,)`` boundaries of sequences packed along ``T`` of a batch-1 input; the state
    restarts from zeros at each (the final state is the last sequence's).
    """
    check_choice(backend, "backend", ("auto", "torch", "fla"))
    if backend == "auto":
        backend = "fla" if fla_available(q.device) else "torch"
    if backend == "fla":
        if not fla_available(q.device):
            raise OmnikitValueError("backend='fla' needs the flash-linear-attention package and a CUDA device")
        packed = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens.long()}
        out, state = _fla_chunk_gated_delta_rule()(
            *(t.transpose(1, 2) for t in (q, k, v, g, beta)), scale=1.0, initial_state=initial_state,
            output_final_state=True, **packed,
        )
        return out.transpose(1, 2), state[-1:] if cu_seqlens is not None else state
    resets = None if cu_seqlens is None else resets_from_cu_seqlens(cu_seqlens, q.shape[2])
    if q.shape[2] == 1:
        return gated_delta_rule_recurrent(q, k, v, g, beta, initial_state, resets)
    return gated_delta_rule_chunked(q, k, v, g, beta, initial_state, chunk_size, resets)


def gated_delta_rule_transition(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gated delta rule over a piece of a sequence as an affine function of the state entering it.

    Every step maps the state ``S (d_k, d_v)`` to ``alpha (I - beta k k^T) S + beta k v^T``: linear in
    ``S`` from the left, and each of its columns evolves on its own. So over the piece (arguments of
    :func:`gated_delta_rule_recurrent`, no initial state) ``S_t = P_t S_in + B_t`` and
    ``o_t = o0_t + S_in^T P_t^T q_t``, where ``B_t, o0_t`` are the state and outputs from a zero state
    and ``P_t`` the product of the steps' ``alpha (I - beta k k^T)``. One run of the rule on ``d_v + d_k``
    columns (the values padded with ``d_k`` zero columns, the state starting at ``[0 | I]``) gives all
    of them.

    Returns:
        ``(o0 (B, H, T, d_v), basis (B, H, T, d_k), final (B, H, d_k, d_v), transition (B, H, d_k, d_k))``,
        all float32, with ``basis_t = P_t^T q_t`` and ``transition = P_T``: the outputs for an entering
        state ``S_in`` are ``o0 + basis @ S_in`` and the state leaving is ``transition @ S_in + final``.
    """
    batch, heads, _, d_k = k.shape
    d_v = v.shape[-1]
    eye = torch.eye(d_k, device=k.device).expand(batch, heads, d_k, d_k)
    initial = torch.cat((eye.new_zeros(batch, heads, d_k, d_v), eye), dim=-1)
    out, state = gated_delta_rule(q, k, F.pad(v.float(), (0, d_k)), g, beta, initial, chunk_size=chunk_size,
                                  backend=backend)
    o0, basis = out.split([d_v, d_k], dim=-1)
    final, transition = state.split([d_v, d_k], dim=-1)
    return o0, basis, final, transition


def _grouped_order(groups: int, sizes: list[int]) -> torch.Tensor:
    """Rows stored group by group, ``sizes`` parts per group (``[g0p0 g0p1 .. | g1p0 ..]``), in part-major
    order (``[g0p0 g1p0 .. | g0p1 g1p1 ..]``): ``(groups * sum(sizes),)`` int64 indices."""
    width, starts = sum(sizes), [sum(sizes[:p]) for p in range(len(sizes))]
    return torch.tensor([g * width + start + i for start, size in zip(starts, sizes) for g in range(groups)
                         for i in range(size)], dtype=torch.long)


@dataclass
class GatedDeltaNetState(StreamingState):
    """The recurrent state ``(B, H_v, d_k, d_v)`` float32 and the short convolution's last
    ``conv_size - 1`` inputs ``(B, C, conv_size - 1)``, and the steps seen so far (``steps``; a static
    state counts them in ``position``, a 0-dim tensor advanced in place, as :class:`StaticKVCache` does).
    ``static``: preallocated and written in place (a static decoding cache: fixed shapes and addresses for
    a compiled step)."""

    batch_size: int
    recurrent: torch.Tensor | None = None
    conv: torch.Tensor | None = None
    static: bool = False
    steps: int = 0
    position: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Steps the state has seen (a host read of ``position`` when static, for eager code)."""
        return int(self.position) if self.position is not None else self.steps

    def update(self, recurrent: torch.Tensor, conv: torch.Tensor, steps: int) -> None:
        """Store the states after a call of ``steps`` steps (in place when static)."""
        if self.static:
            self.recurrent.copy_(recurrent)
            self.conv.copy_(conv)
            self.position.add_(steps)
        else:
            self.recurrent, self.conv = recurrent, conv
            self.steps += steps


class GatedDeltaNet(StreamingModule[GatedDeltaNetState]):
    """Gated DeltaNet token mixer (Qwen3-Next / Qwen3.5): ``(B, T, dim) -> (B, T, dim)``, causal.

    ``q, k, v`` come from one projection and a causal depthwise convolution with SiLU; ``q`` and
    ``k`` are L2-normalised (``q`` scaled by ``d_k^-1/2``); ``beta = sigmoid(b)``; the decay is
    ``g = -exp(A_log) * softplus(a + dt_bias)``; the output is the gated RMSNorm ``RMSNorm(o) * silu(z)``
    (plain weight, per value head) projected back.

    Args:
        dim: model width.
        num_heads: query/key heads.
        head_dim: ``d_k`` (default ``dim // num_heads``).
        num_v_heads: value heads, a multiple of ``num_heads`` (default ``num_heads``).
        v_head_dim: ``d_v`` (default ``head_dim``).
        conv_size: kernel of the short causal convolution.
        chunk_size: chunk length of the chunked form.
        backend: ``"auto"``, ``"torch"`` or ``"fla"`` (see :func:`gated_delta_rule`).
        projection: ``"split"`` (Qwen3.5): ``qkv`` (all q, all k, all v rows), ``gate`` (z) and
            ``beta_decay`` (b then a) projections; ``"fused"`` (Qwen3-Next): ``qkvz`` and ``ba``, their
            rows grouped per key head (``q_h, k_h``, then the head's ``v`` and ``z`` value heads;
            ``b`` then ``a`` of its value heads).

    Inside ``with layer.streaming(B):`` every call continues the sequence from a fixed-size state;
    ``streaming(B, max_len=N)`` preallocates it (written in place, for compiled decoding).
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
        projection: ProjectionLayout = "split",
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
        check_choice(projection, "projection", ("split", "fused"))
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.num_v_heads, self.v_head_dim, self.chunk_size, self.backend = num_v_heads, v_head_dim, chunk_size, backend
        self.projection = projection
        qkv = 2 * num_heads * head_dim + num_v_heads * v_head_dim
        if projection == "split":
            self.qkv = Linear(dim, qkv, bias=False)
            self.gate = Linear(dim, num_v_heads * v_head_dim, bias=False)  # z
            self.beta_decay = Linear(dim, 2 * num_v_heads, bias=False)  # b, a
        else:
            self.qkvz = Linear(dim, qkv + num_v_heads * v_head_dim, bias=False)
            self.ba = Linear(dim, 2 * num_v_heads, bias=False)
            groups = num_v_heads // num_heads  # rows of the fused outputs in the split layout's order
            self.register_buffer("qkvz_order", _grouped_order(num_heads, [head_dim] * 2 + [groups * v_head_dim] * 2),
                                 persistent=False)
            self.register_buffer("ba_order", _grouped_order(num_heads, [groups, groups]), persistent=False)
        self.conv = nn.Conv1d(qkv, qkv, conv_size, groups=qkv, bias=False)  # applied causally
        self.A_log = nn.Parameter(torch.empty(num_v_heads).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(torch.ones(num_v_heads))
        self.norm = RMSNorm(v_head_dim, norm_eps)
        self.out = Linear(num_v_heads * v_head_dim, dim, bias=False)
        #: set by ``parallelize`` on a ``"cp"`` mesh (:class:`omnikit.distributed.cp.ContextParallel`): the
        #: input holds two pieces of the sequence, their entering states and convolution inputs come from it
        self.context_parallel: Any = None

    def init_streaming_state(self, batch_size: int) -> GatedDeltaNetState:
        return GatedDeltaNetState(batch_size)

    def init_static_state(self, batch_size: int, max_len: int) -> GatedDeltaNetState:
        weight = self.conv.weight
        recurrent = torch.zeros(batch_size, self.num_v_heads, self.head_dim, self.v_head_dim, device=weight.device)
        conv = weight.new_zeros(batch_size, weight.shape[0], weight.shape[-1] - 1)
        position = torch.zeros((), dtype=torch.long, device=weight.device)
        for buffer in (recurrent, conv, position):
            torch._dynamo.mark_static_address(buffer)
        return GatedDeltaNetState(batch_size, recurrent, conv, static=True, position=position)

    @property
    def cache_length(self) -> int:
        """Steps the open stream has seen (0 when not streaming; a host sync for a static state), as
        :attr:`Attention.cache_length` counts cached positions."""
        state = self.streaming_state
        return 0 if state is None else state.length

    @property
    def cache_position(self) -> int | torch.Tensor:
        """Position of the next step: :attr:`cache_length`, or a static state's 0-dim position tensor
        (read without a host sync)."""
        state = self.streaming_state
        return state.position if state is not None and state.position is not None else self.cache_length

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, T, dim)`` -> ``qkv (B, T, C)`` (all q, all k, all v), ``z (B, T, H_v, d_v)`` and
        ``b, a (B, T, H_v)``."""
        batch, length, _ = x.shape
        if self.projection == "split":
            b, a = self.beta_decay(x).chunk(2, dim=-1)
            return self.qkv(x), self.gate(x).reshape(batch, length, self.num_v_heads, self.v_head_dim), b, a
        value_width = self.num_v_heads * self.v_head_dim
        qkv, z = self.qkvz(x).index_select(-1, self.qkvz_order).split(
            [2 * self.num_heads * self.head_dim + value_width, value_width], dim=-1
        )
        b, a = self.ba(x).index_select(-1, self.ba_order).chunk(2, dim=-1)
        return qkv, z.reshape(batch, length, self.num_v_heads, self.v_head_dim), b, a

    def _conv(self, u: torch.Tensor, resets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal depthwise convolution of ``u (B, C, T)``, continuing a stream's last inputs, or with
        ``resets (B, T)`` restarting at every packed sequence -> ``(out (B, C, T), last conv_size - 1
        inputs (B, C, conv_size - 1))``."""
        weight, length = self.conv.weight, u.shape[-1]
        size = weight.shape[-1]
        if resets is not None:  # tap s reads step t - s only within t's sequence
            segment = resets.long().cumsum(-1)[:, None]
            out = torch.zeros_like(u)
            for shift in range(size):
                same = segment == F.pad(segment, (shift, 0), value=-1)[..., :length]
                out = out + weight[:, :, size - 1 - shift] * F.pad(u, (shift, 0))[..., :length] * same
            return out, None
        state = self.streaming_state
        if self.context_parallel is not None:
            history = self.context_parallel.conv_history(u, size - 1)
        elif state is not None and state.conv is not None:
            history = state.conv
        else:
            history = u.new_zeros(*u.shape[:2], size - 1)
        buffer = torch.cat((history.to(u.dtype), u), dim=-1)
        return F.conv1d(buffer, weight, groups=weight.shape[0]), buffer[..., buffer.shape[-1] - (size - 1):]

    def forward(
        self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x: (B, T, dim) -> (B, T, dim)``.

        ``key_padding_mask (B, T)`` bool, False on padding: padded steps are zeroed before the
        projections, so they neither write to the state nor reach the convolution (left padding then
        equals the item run alone). ``cu_seqlens (N+1,)``: sequences packed along ``T`` of a batch-1
        input; the state and the convolution restart at each (offline only).

        Under context parallel (``context_parallel`` set) ``x`` holds this rank's two pieces of every
        sequence, each in natural order, one after the other (:func:`omnikit.distributed.cp.cp_positions`):
        they run as two batch items whose entering states and convolution inputs come from the pieces
        before them, on whichever rank those are.
        """
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        if self.context_parallel is not None:
            if key_padding_mask is not None or cu_seqlens is not None or self.streaming_state is not None:
                raise OmnikitValueError(
                    "context parallel Gated DeltaNet takes no padding mask, packed sequences or stream"
                )
            if x.shape[1] % 2:
                raise OmnikitValueError(f"context parallel `x` holds two equal pieces but got length {x.shape[1]}")
            return self._forward(x.reshape(2 * x.shape[0], x.shape[1] // 2, self.dim)).reshape(x.shape)
        return self._forward(x, key_padding_mask=key_padding_mask, cu_seqlens=cu_seqlens)

    def _forward(
        self, x: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        state = self.streaming_state
        if state is not None:
            state.check_batch(batch)
        if key_padding_mask is not None:
            check_tensor(key_padding_mask, "key_padding_mask", shape=(batch, length), dtype=torch.bool)
            x = x * key_padding_mask[..., None].to(x.dtype)
        resets = None
        if cu_seqlens is not None:
            if state is not None:
                raise OmnikitValueError("`cu_seqlens` (packed sequences) cannot be used while streaming")
            if batch != 1:
                raise OmnikitValueError(
                    f"`cu_seqlens` packs sequences along T of a batch-1 input but got batch {batch}"
                )
            resets = resets_from_cu_seqlens(cu_seqlens, length)
        qkv, z, b, a = self._project(x)
        qkv, conv_tail = self._conv(qkv.transpose(1, 2), resets)
        qkv = F.silu(qkv).transpose(1, 2)
        q, k, v = qkv.split([self.num_heads * self.head_dim] * 2 + [self.num_v_heads * self.v_head_dim], dim=-1)
        q, k = (t.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k))
        q = l2_normalize(q.float()) * self.head_dim**-0.5
        k = l2_normalize(k.float())
        groups = self.num_v_heads // self.num_heads
        if groups > 1:
            q, k = q.repeat_interleave(groups, dim=1), k.repeat_interleave(groups, dim=1)
        v = v.reshape(batch, length, self.num_v_heads, self.v_head_dim).transpose(1, 2)
        beta = b.float().transpose(1, 2).sigmoid()  # (B, H_v, T)
        g = -self.A_log.float().exp()[:, None] * F.softplus(a.float().transpose(1, 2) + self.dt_bias.float()[:, None])
        initial = None if state is None else state.recurrent
        if self.context_parallel is not None:
            o = self.context_parallel.delta_rule(q, k, v, g, beta, chunk_size=self.chunk_size, backend=self.backend)
        else:
            o, final = gated_delta_rule(q, k, v, g, beta, initial, chunk_size=self.chunk_size, backend=self.backend,
                                        cu_seqlens=cu_seqlens)
        if state is not None:
            state.update(final, conv_tail, length)
        o = self.norm(o.transpose(1, 2)) * F.silu(z)
        return self.out(o.reshape(batch, length, -1))

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, v_heads={self.num_v_heads}, "
            f"v_head_dim={self.v_head_dim}, chunk={self.chunk_size}, backend={self.backend!r}, "
            f"projection={self.projection!r}"
        )
