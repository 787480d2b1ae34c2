"""Multi-codebook layouts for language models, each with its exact inverse.

- :func:`flatten_codes` / :func:`unflatten_codes`: frame-major interleaving
  ``(B, K, T) <-> (B, T * K)`` (``c0_t0, c1_t0, ..., c{K-1}_t0, c0_t1, ...``), optionally offsetting
  codebook ``k`` by ``k * codebook_size`` so that all codebooks share one vocabulary.
- :func:`delay_codes` / :func:`undelay_codes`: the MusicGen delay pattern, codebook ``k`` shifted
  right by ``delays[k]`` steps (default ``k``), ``(B, K, T) <-> (B, K, T + max(delays))`` with
  ``pad_id`` where a codebook has no code yet / any more. Moshi-style delays (``[0, 1, 1, ...]``)
  are the same call with other ``delays``; :func:`undelay_logits` undoes it for per-step logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["delay_codes", "delay_mask", "flatten_codes", "undelay_codes", "undelay_logits", "unflatten_codes"]


def _check_codes(codes: object, name: str = "codes") -> torch.Tensor:
    return check_tensor(codes, name, ndim=3, floating=False)


def flatten_codes(codes: torch.Tensor, *, codebook_size: int | None = None) -> torch.Tensor:
    """``(B, K, T) -> (B, T * K)`` frame-major; with ``codebook_size``, codebook k is offset by ``k * size``."""
    codes = _check_codes(codes)
    if codebook_size is not None:
        check_positive(codebook_size, "codebook_size")
        codes = codes + torch.arange(codes.shape[1], device=codes.device)[None, :, None] * codebook_size
    return codes.transpose(1, 2).reshape(codes.shape[0], -1)


def unflatten_codes(tokens: torch.Tensor, num_codebooks: int, *, codebook_size: int | None = None) -> torch.Tensor:
    """Inverse of :func:`flatten_codes`: ``(B, T * K) -> (B, K, T)``."""
    check_tensor(tokens, "tokens", ndim=2, floating=False)
    check_positive(num_codebooks, "num_codebooks")
    if tokens.shape[1] % num_codebooks:
        raise OmnikitValueError(
            f"`tokens` length {tokens.shape[1]} is not a multiple of num_codebooks={num_codebooks}"
        )
    codes = tokens.view(tokens.shape[0], -1, num_codebooks).transpose(1, 2)
    if codebook_size is not None:
        codes = codes - torch.arange(num_codebooks, device=codes.device)[None, :, None] * codebook_size
    return codes.contiguous()


def _delays(delays: Sequence[int] | None, k: int) -> list[int]:
    delays = list(range(k)) if delays is None else [int(d) for d in delays]
    if len(delays) != k or any(d < 0 for d in delays):
        raise OmnikitValueError(f"`delays` expected {k} non-negative ints (one per codebook) but got {delays}")
    return delays


def delay_codes(codes: torch.Tensor, pad_id: int, delays: Sequence[int] | None = None) -> torch.Tensor:
    """``(B, K, T) -> (B, K, T + max(delays))``: codebook k starts ``delays[k]`` steps late."""
    codes = _check_codes(codes)
    batch, k, steps = codes.shape
    delays = _delays(delays, k)
    out = codes.new_full((batch, k, steps + max(delays)), pad_id)
    for i, d in enumerate(delays):
        out[:, i, d : d + steps] = codes[:, i]
    return out


def undelay_codes(delayed: torch.Tensor, delays: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`delay_codes`: ``(B, K, T + max(delays)) -> (B, K, T)``."""
    delayed = _check_codes(delayed, "delayed")
    _, k, total = delayed.shape
    delays = _delays(delays, k)
    steps = total - max(delays)
    if steps < 0:
        raise OmnikitValueError(f"`delayed` has {total} steps, fewer than the largest delay {max(delays)}")
    return torch.stack([delayed[:, i, d : d + steps] for i, d in enumerate(delays)], dim=1)


def undelay_logits(logits: torch.Tensor, delays: Sequence[int] | None = None) -> torch.Tensor:
    """Per-step logits of a delayed layout ``(B, S, K, V)`` -> per-frame ``(B, S - max(delays), K, V)``.

    Frame ``f`` of codebook ``k`` was predicted at step ``f + delays[k]``: the layout of
    :func:`delay_codes` (default delays ``0..K-1``), undone as :func:`undelay_codes` does for codes.
    """
    check_tensor(logits, "logits", ndim=4)
    batch, steps, k, vocab = logits.shape
    step_of = undelay_codes(torch.arange(steps, device=logits.device).expand(1, k, steps), delays)  # (1, K, F)
    index = step_of.transpose(1, 2)[..., None].expand(batch, step_of.shape[2], k, vocab)
    return logits.gather(1, index)


def delay_mask(num_codebooks: int, steps: int, delays: Sequence[int] | None = None,
               device: torch.device | None = None) -> torch.Tensor:
    """``(K, T + max(delays))`` bool, True where :func:`delay_codes` placed a real code (not ``pad_id``)."""
    delays = _delays(delays, num_codebooks)
    pos = torch.arange(steps + max(delays), device=device)[None, :]
    start = torch.tensor(delays, device=device)[:, None]
    return (pos >= start) & (pos < start + steps)
