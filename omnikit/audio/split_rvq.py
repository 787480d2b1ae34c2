"""Split residual VQ in the manner of Mimi: a semantic codebook beside an acoustic residual stack.

Both branches quantize the same input (the acoustic stack does not see the semantic residual);
their outputs are summed. Codes are ``[semantic; acoustic]`` along K. The semantic part is returned
separately (``semantic``) so it can be distilled toward a self-supervised speech model's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omnikit.audio.quantize import QuantizerOutput, ResidualVQ
from omnikit.outputs import traceable_output
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["SplitQuantizerOutput", "SplitResidualVQ"]


@traceable_output
@dataclass
class SplitQuantizerOutput(QuantizerOutput):
    """:class:`QuantizerOutput` plus ``semantic (B, T, dim)``, the semantic branch's output alone."""

    semantic: torch.Tensor | None = None


class SplitResidualVQ(nn.Module):
    """``num_semantic`` semantic codebooks + ``num_quantizers - num_semantic`` acoustic ones.

    Each branch is a :class:`ResidualVQ` with its own projections to ``codebook_dim``; ``**vq``
    options go to both.
    """

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, *, num_semantic: int = 1,
                 codebook_dim: int | None = None, **vq: object) -> None:
        super().__init__()
        check_positive(num_semantic, "num_semantic")
        if num_quantizers <= num_semantic:
            raise OmnikitValueError(
                f"`num_quantizers` ({num_quantizers}) must exceed `num_semantic` ({num_semantic})"
            )
        self.dim, self.num_quantizers, self.codebook_size = dim, num_quantizers, codebook_size
        self.num_semantic = num_semantic
        self.semantic = ResidualVQ(dim, num_semantic, codebook_size, codebook_dim=codebook_dim, **vq)
        self.acoustic = ResidualVQ(dim, num_quantizers - num_semantic, codebook_size, codebook_dim=codebook_dim, **vq)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, n_q: int | None = None
                ) -> SplitQuantizerOutput:
        """``x (B, T, dim)`` -> :class:`SplitQuantizerOutput` using the first ``n_q`` codebooks overall."""
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        n_q = self.num_quantizers if n_q is None else n_q
        if not self.num_semantic <= n_q <= self.num_quantizers:
            raise OmnikitValueError(f"`n_q` expected {self.num_semantic}..{self.num_quantizers} but got {n_q}")
        sem = self.semantic(x, mask)
        parts = [sem]
        if n_q > self.num_semantic:
            parts.append(self.acoustic(x, mask, n_q=n_q - self.num_semantic))
        quantized = sum(p.quantized for p in parts)
        codes = torch.cat([p.codes for p in parts], dim=1)
        loss, commit, codebook = (sum(getattr(p, k) for p in parts) for k in ("loss", "commit_loss", "codebook_loss"))
        return SplitQuantizerOutput(quantized, codes, loss, commit, codebook, semantic=sem.quantized)

    def encode(self, x: torch.Tensor, *, n_q: int | None = None) -> torch.Tensor:
        """``x (B, T, dim) -> codes (B, n_q, T)``."""
        n_q = self.num_quantizers if n_q is None else n_q
        codes = self.semantic.encode(x)
        if n_q > self.num_semantic:
            codes = torch.cat([codes, self.acoustic.encode(x, n_q=n_q - self.num_semantic)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K', T)`` (semantic first) -> ``(B, T, dim)``."""
        check_tensor(codes, "codes", ndim=3, floating=False)
        out = self.semantic.decode(codes[:, : self.num_semantic])
        if codes.shape[1] > self.num_semantic:
            out = out + self.acoustic.decode(codes[:, self.num_semantic :])
        return out
