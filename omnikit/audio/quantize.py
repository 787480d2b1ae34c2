"""Vector quantizers: one codebook (:class:`VectorQuantizer`) and a residual stack (:class:`ResidualVQ`).

A codebook is trained either by exponential moving averages of the vectors assigned to each code
(``ema=True``, EnCodec/SoundStream) or by gradient through a codebook loss (``ema=False``,
VQ-VAE). Both initialise by k-means on the first training batch, restart codes whose usage falls
below ``dead_threshold`` with vectors from the batch, pull the encoder toward its codes with a
commitment loss, and pass gradients straight through the quantizer.

``ResidualVQ.forward(x (B, T, dim), mask=None) -> QuantizerOutput`` which unpacks as
``quantized, codes, loss = rvq(x)``; codes are ``(B, K, T)`` int64. Padded frames (``mask`` False)
never update codebooks nor enter the losses. Distances use ``|c|^2 - 2 x.c`` in one matmul per
stage; EMA statistics use ``bincount``/``index_add_`` (no one-hot matrices).

The EMA statistics are local to the process; average them across ranks yourself when training
data-parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.outputs import traceable_output
from omnikit.utils.checks import OmnikitValueError, check_finite, check_positive, check_tensor

__all__ = ["QuantizerOutput", "ResidualVQ", "VectorQuantizer", "kmeans"]


@traceable_output
@dataclass
class QuantizerOutput:
    """What a quantizer returns; unpacks and indexes as the tuple ``(quantized, codes, loss)``.

    Attributes:
        quantized: ``(B, T, dim)``, equal to the codes' vectors, with straight-through gradient to the input.
        codes: ``(B, K, T)`` int64.
        loss: ``commitment_weight * commit_loss + codebook_loss``, a scalar to add to the training loss.
        commit_loss: mean squared distance of the inputs to their (detached) codes, summed over stages.
        codebook_loss: for learned codebooks, the distance of the codes to the (detached) inputs.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    commit_loss: torch.Tensor
    codebook_loss: torch.Tensor

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.quantized, self.codes, self.loss))

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.quantized, self.codes, self.loss)[index]


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the closest code of every row of ``x (N, D)``: argmin of ``|c|^2 - 2 x.c``."""
    distances = torch.addmm(codebook.square().sum(-1)[None], x, codebook.t(), alpha=-2.0)
    return distances.argmin(dim=-1)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of ``x (N, D)``: returns ``(centroids (k, D), counts (k,))``.

    Starts from ``k`` random rows (with replacement when ``N < k``); a centroid that loses all its
    points keeps its previous position. Non-finite rows raise ``ValueError``.
    """
    check_tensor(x, "x", ndim=2, floating=True)
    check_positive(k, "k")
    if x.shape[0] == 0:
        raise OmnikitValueError("`x` expected at least one row to cluster but got shape (0, D)")
    check_finite(x, "x", "k-means needs finite vectors")
    n = x.shape[0]
    start = (torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(0, n, (k,), generator=generator))
    return _lloyd(x, x[start.to(x.device)].clone(), iters)


def _code_counts(codes: torch.Tensor, k: int, weights: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``(k,)`` rows assigned to each code: a count, or the sum of the rows' ``weights`` (a fixed-shape
    ``index_add``, where ``bincount``'s output size would depend on the values)."""
    if weights is None:
        return torch.bincount(codes, minlength=k).to(dtype)
    return torch.zeros(k, device=codes.device, dtype=dtype).index_add_(0, codes, weights.to(dtype))


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int, weights: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` Lloyd steps from ``centroids (k, D)`` over the rows of ``x (N, D)`` (each weighted by
    ``weights (N,)`` when given; a weight-0 row must be finite) -> ``(centroids, counts (k,))``; an
    empty centroid stays put."""
    k = centroids.shape[0]
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    rows = x if weights is None else x * weights[:, None]
    for _ in range(iters):
        assign = _nearest(x, centroids)
        counts = _code_counts(assign, k, weights, x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, rows)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids, counts


def _masked_mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the ``valid (N,)`` rows of ``a, b (N, D)`` (0 without any), without selecting them."""
    return torch.where(valid[:, None], a - b, 0).square().sum() / (valid.sum() * a.shape[-1]).clamp(min=1)


class VectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` vectors of size ``dim``.

    Args:
        ema: update the codebook by moving averages (``decay``) instead of gradients.
        kmeans_init: initialise from k-means (``kmeans_iters``) of the first training batch;
            otherwise from a standard normal draw at construction.
        dead_threshold: codes whose EMA usage falls below this many vectors per batch are
            restarted from random batch vectors (0 disables).
    """

    def __init__(self, dim: int, codebook_size: int, *, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 10,
                 dead_threshold: float = 2.0) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(codebook_size, "codebook_size")
        if not 0.0 < decay < 1.0:
            raise OmnikitValueError(f"`decay` expected a float in (0, 1) but got {decay}")
        self.dim, self.codebook_size, self.ema, self.decay, self.eps = dim, codebook_size, ema, decay, eps
        self.kmeans_iters, self.dead_threshold = kmeans_iters, dead_threshold
        init = torch.randn(codebook_size, dim)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (...) -> vectors (..., dim)``."""
        return F.embedding(codes, self.codebook)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., dim) -> codes (...)`` int64."""
        flat = x.reshape(-1, self.dim)
        return _nearest(flat.to(self.codebook.dtype), self.codebook.detach()).view(x.shape[:-1])

    @torch.no_grad()
    def _initialise(self, vectors: torch.Tensor) -> None:
        centroids, counts = kmeans(vectors.float(), self.codebook_size, self.kmeans_iters)
        self.codebook.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_sum.copy_(centroids * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """EMA usage (and, with ``ema``, codebook) update from the valid ``vectors (N, dim)`` (traced: all
        rows, padded ones zeroed and ``weights (N,)`` 0; a batch without a valid row changes nothing)."""
        counts = _code_counts(codes, self.codebook_size, weights, self.cluster_size.dtype)
        kept = None if weights is None else [b.clone() for b in self._statistics()]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            rows = vectors if weights is None else vectors * weights[:, None]
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, rows.to(self.embed_sum.dtype))
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if weights is not None:
            self._restart_dead_traced(vectors, weights)
            none_valid = weights.sum() == 0
            for stat, before in zip(self._statistics(), kept):
                stat.copy_(torch.where(none_valid, before, stat))
            return
        dead = self.cluster_size < self.dead_threshold
        if self.dead_threshold > 0 and bool(dead.any()):
            picks = torch.randint(0, vectors.shape[0], (int(dead.sum()),), device=vectors.device)
            fresh = vectors[picks].to(self.codebook.dtype)
            self.codebook.data[dead] = fresh
            self.cluster_size[dead] = self.dead_threshold
            if self.ema:
                self.embed_sum[dead] = fresh * self.dead_threshold

    def _statistics(self) -> list[torch.Tensor]:
        """What a training step updates: usage, codebook (and EMA sums)."""
        return [self.cluster_size, self.codebook, *([self.embed_sum] if self.ema else [])]

    def _restart_dead_traced(self, vectors: torch.Tensor, weights: torch.Tensor) -> None:
        """Dead codes restarted from valid rows drawn by ``multinomial`` (fixed shapes: a draw for every
        code, kept where the code is dead)."""
        if self.dead_threshold <= 0:
            return
        dead = (self.cluster_size < self.dead_threshold)[:, None]
        picks = torch.multinomial(weights.float() + (weights.sum() == 0), self.codebook_size, replacement=True)
        fresh = vectors[picks].to(self.codebook.dtype)
        self.codebook.copy_(torch.where(dead, fresh, self.codebook))
        self.cluster_size.copy_(torch.where(dead[:, 0], self.dead_threshold, self.cluster_size))
        if self.ema:
            self.embed_sum.copy_(torch.where(dead, fresh * self.dead_threshold, self.embed_sum))

    @torch.no_grad()
    def _initialise_traced(self, vectors: torch.Tensor, weights: torch.Tensor) -> None:
        """:meth:`_initialise` under tracing: k-means of the rows weighted 1 (padding: zeroed rows, 0), run
        through ``torch.cond`` so that an initialised codebook skips it without a host read."""

        def keep(v: torch.Tensor, w: torch.Tensor, codebook: torch.Tensor, sizes: torch.Tensor):
            return codebook.clone(), sizes.clone()

        def fresh(v: torch.Tensor, w: torch.Tensor, codebook: torch.Tensor, sizes: torch.Tensor):
            # distinct rows, valid ones first (padding weighs 1e-20, k placeholder slots 1e-30); a pick
            # that is not a valid row (fewer valid rows than codes) is redrawn with replacement
            k = self.codebook_size
            start = torch.multinomial(torch.cat((w + 1e-20, w.new_full((k,), 1e-30))), k)
            row = start.clamp(max=v.shape[0] - 1)
            redraw = torch.multinomial(w + (w.sum() == 0), k, replacement=True)
            start = torch.where((start < v.shape[0]) & (w[row] > 0), row, redraw)
            return _lloyd(v, v[start], self.kmeans_iters, w)

        was = self.initialized.clone()
        codebook, sizes = torch.cond(self.initialized, keep, fresh,
                                     (vectors.float(), weights.float(), self.codebook.detach(), self.cluster_size))
        self.codebook.copy_(codebook)
        self.cluster_size.copy_(sizes)
        if self.ema:
            self.embed_sum.copy_(torch.where(was, self.embed_sum, codebook * sizes[:, None]))
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor, valid: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (N, dim)`` -> ``(vectors (N, dim), codes (N,), commit_loss, codebook_loss)``.

        ``vectors`` carry the gradient of the codebook (learned mode) but not of ``x``;
        ``valid (N,)`` bool selects the rows that train the codebook and enter the losses.
        """
        if torch.compiler.is_compiling():  # traced: no row selection by value, padded rows weighted 0
            return self._quantize_traced(x, x.new_ones(x.shape[0], dtype=torch.bool) if valid is None else valid)
        picked = x if valid is None else x[valid]
        if self.training:
            check_finite(picked, "x", "the codebook was left untouched")
        if self.training and not bool(self.initialized):
            self._initialise(picked.detach())
        codes = _nearest(x.detach().to(self.codebook.dtype), self.codebook.detach())
        vectors = self.lookup(codes).to(x.dtype)
        chosen = vectors if valid is None else vectors[valid]
        commit = F.mse_loss(picked, chosen.detach()) if picked.numel() else x.new_zeros(())
        codebook_loss = x.new_zeros(())
        if not self.ema and self.training and picked.numel():
            codebook_loss = F.mse_loss(chosen, picked.detach())
        if self.training and picked.numel():
            self._update(picked.detach(), codes if valid is None else codes[valid])
        return vectors, codes, commit, codebook_loss

    def _quantize_traced(self, x: torch.Tensor, valid: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`quantize` with fixed shapes: every row stays; padded rows (``valid (N,)`` False) are
        zeroed and weighted 0 in the codebook statistics, and left out of the losses."""
        weights, clean = valid.to(x.dtype), x.detach().masked_fill(~valid[:, None], 0)
        if self.training:
            self._initialise_traced(clean, weights)
        codes = _nearest(x.detach().to(self.codebook.dtype), self.codebook.detach())
        vectors = self.lookup(codes).to(x.dtype)
        commit = _masked_mse(x, vectors.detach(), valid)
        codebook_loss = x.new_zeros(())
        if not self.ema and self.training:
            codebook_loss = _masked_mse(vectors, x.detach(), valid)
        if self.training:
            self._update(clean, codes, weights)
        return vectors, codes, commit, codebook_loss


class ResidualVQ(nn.Module):
    """``num_quantizers`` codebooks, each quantizing what the previous ones left.

    Args:
        dim: input width.
        num_quantizers: codebooks K.
        codebook_size: codes per codebook.
        codebook_dim: quantize in a projected space of this width (``project_in``/``project_out``
            linear maps, as in Mimi); default ``dim`` (no projection).
        commitment_weight: weight of the commitment loss in ``loss``.
        **vq: options of every :class:`VectorQuantizer` (``ema``, ``decay``, ``kmeans_init``,
            ``dead_threshold`` ...).
    """

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, *, codebook_dim: int | None = None,
                 commitment_weight: float = 1.0, **vq: object) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_quantizers, "num_quantizers")
        codebook_dim = dim if codebook_dim is None else codebook_dim
        check_positive(codebook_dim, "codebook_dim")
        self.dim, self.codebook_dim, self.commitment_weight = dim, codebook_dim, commitment_weight
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self.layers = nn.ModuleList(VectorQuantizer(codebook_dim, codebook_size, **vq)  # type: ignore[arg-type]
                                    for _ in range(num_quantizers))

    def _check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.num_quantizers
        check_positive(n_q, "n_q")
        if n_q > self.num_quantizers:
            raise OmnikitValueError(f"`n_q` expected at most num_quantizers={self.num_quantizers} but got {n_q}")
        return n_q

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, n_q: int | None = None
                ) -> QuantizerOutput:
        """Quantize ``x (B, T, dim)`` with the first ``n_q`` codebooks (all by default).

        ``mask (B, T)`` bool, True on valid frames. Returns :class:`QuantizerOutput`.
        """
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        n_q = self._check_n_q(n_q)
        batch, steps, _ = x.shape
        valid = None
        if mask is not None:
            valid = check_tensor(mask, "mask", shape=(batch, steps), dtype=torch.bool).reshape(-1)
        z = self.project_in(x).reshape(-1, self.codebook_dim)
        residual, total = z, torch.zeros_like(z)
        codes, commit, codebook_loss = [], x.new_zeros(()), x.new_zeros(())
        for layer in self.layers[:n_q]:
            vectors, layer_codes, layer_commit, layer_codebook = layer.quantize(residual, valid)
            vectors = vectors.detach()
            residual = residual - vectors
            total = total + vectors
            codes.append(layer_codes)
            commit, codebook_loss = commit + layer_commit, codebook_loss + layer_codebook
        quantized = z + (total - z).detach()  # straight-through: the codes' value, the identity's gradient
        out = self.project_out(quantized.view(batch, steps, self.codebook_dim))
        codes_t = torch.stack(codes, dim=0).view(n_q, batch, steps).transpose(0, 1)
        return QuantizerOutput(out, codes_t, self.commitment_weight * commit + codebook_loss, commit, codebook_loss)

    def encode(self, x: torch.Tensor, *, n_q: int | None = None) -> torch.Tensor:
        """``x (B, T, dim) -> codes (B, n_q, T)`` without touching the codebooks."""
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        residual = self.project_in(x)
        codes = []
        for layer in self.layers[: self._check_n_q(n_q)]:
            layer_codes = layer.encode(residual)
            residual = residual - layer.lookup(layer_codes).to(residual.dtype)
            codes.append(layer_codes)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K', T)`` with ``K' <= num_quantizers`` -> ``(B, T, dim)``."""
        check_tensor(codes, "codes", ndim=3, floating=False)
        if codes.shape[1] > self.num_quantizers or codes.shape[1] < 1:
            raise OmnikitValueError(
                f"`codes` expected 1..{self.num_quantizers} codebooks (B, K, T) but got shape {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise OmnikitValueError(
                f"`codes` expected values in [0, {self.codebook_size}) but got [{int(codes.min())}, {int(codes.max())}]"
            )
        z = sum(layer.lookup(codes[:, k]) for k, layer in enumerate(self.layers[: codes.shape[1]]))
        return self.project_out(z)
