"""The depth transformer over the codebooks of one frame (Moshi).

Shared by the Talker's ``"depth"`` / ``"mtp"`` strategies and the full-duplex model, where the
first position is the inner-monologue text token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.audio.layouts import undelay_logits
from omnikit.layers.decoder import Decoder, DecoderConfig
from omnikit.layers.kv_cache import rewind_static_caches
from omnikit.models.decode_cache import CompileOption, compiled_step
from omnikit.streaming import streaming, suspended
from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.config import NestedConfig

# undelay_logits: imported from omnikit.audio.layouts, exported here too
__all__ = ["PREDICTOR_DEFAULTS", "CodePredictor", "TemporalDepthConfig", "undelay_logits"]

#: The depth transformer's :class:`DecoderConfig` fields unless configured otherwise (Talker and duplex).
PREDICTOR_DEFAULTS: dict[str, Any] = dict(dim=64, depth=1, num_heads=4, rope_base=10000.0)


class TemporalDepthConfig(NestedConfig):
    """Shared by the configs of models made of a temporal transformer (``temporal``, over frames) and a
    depth transformer (``predictor``, over the tokens of a frame): the flat keywords of ``temporal``
    (``dim=``, ``depth=``, ``num_heads=`` ...), the defaults of both, and ``dim``."""

    temporal: DecoderConfig
    predictor: DecoderConfig

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = {
        name: ("temporal", name)
        for name in ("dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "rope_base")
    }
    nested_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "temporal": dict(rope_base=10000.0), "predictor": PREDICTOR_DEFAULTS,
    }

    @property
    def dim(self) -> int:
        """The model's width (the temporal transformer's)."""
        return self.temporal.dim


class CodePredictor(nn.Module):
    """A small causal transformer over the ``K`` tokens of one frame (Moshi's depth transformer).

    Position ``k`` reads ``context_proj(h) + embed_{k-1}(code_{k-1})`` (position 0: the context
    alone) and predicts token ``k`` for ``k >= first`` (``first=1`` when token 0 comes from
    elsewhere: the Talker's head in Qwen3-Omni's MTP, the text head in the duplex model).
    ``forward(h (N, in_dim), codes (N, K)) -> logits (N, K - first, V)`` with teacher forcing;
    :meth:`sample` decodes autoregressively. It never streams: inside a parent's open stream it
    runs offline on each frame, over a growing prefix; inside :meth:`static_decoding` it decodes
    one position per step through a static KV cache of ``K`` slots instead (fixed shapes).

    Args:
        in_dim: width of the context ``h``.
        config: the depth transformer (its ``dim`` is the predictor's width).
        vocab_sizes: ids of each of the ``K`` positions; the predicted ones (``first:``) share one
            vocabulary ``V``.
        first: the first predicted position.
    """

    def __init__(self, in_dim: int, config: DecoderConfig, vocab_sizes: Sequence[int], *, first: int = 0) -> None:
        super().__init__()
        vocab_sizes = [int(v) for v in vocab_sizes]
        if not 0 <= first < len(vocab_sizes) or len(set(vocab_sizes[first:])) != 1:
            raise OmnikitValueError(
                f"`vocab_sizes` expected more than first={first} entries, equal from position {first} on, "
                f"but got {vocab_sizes}"
            )
        k, d = len(vocab_sizes), config.dim
        self.num_codebooks, self.first = k, first
        self.context_proj = nn.Linear(in_dim, d)
        self.embed = nn.ModuleList(nn.Embedding(vocab_sizes[i], d) for i in range(k - 1))
        self.decoder = Decoder(config)
        self.heads = nn.ModuleList(nn.Linear(d, vocab_sizes[i], bias=False) for i in range(first, k))
        self._static_step: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _inputs(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        ctx = self.context_proj(h)[:, None]  # (N, 1, d)
        shifted = [torch.zeros_like(ctx[:, 0])] + [self.embed[i](codes[:, i]) for i in range(codes.shape[1] - 1)]
        return ctx + torch.stack(shifted, dim=1)

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K - first, V)`` of positions ``first ..``; ``codes (N, K)`` teacher forcing."""
        with suspended(self):
            x = self.decoder(self._inputs(h, codes))
        return torch.stack([head(x[:, self.first + i]) for i, head in enumerate(self.heads)], dim=1)

    def position_step(self, x: torch.Tensor) -> torch.Tensor:
        """One position inside :meth:`static_decoding`: input ``x (N, 1, d)`` -> hidden ``(N, d)``."""
        return self.decoder(x)[:, 0]

    @contextmanager
    def static_decoding(self, batch_size: int, compile: CompileOption = False) -> Iterator[None]:
        """Inside, :meth:`sample` runs one :meth:`position_step` per position through a static KV cache of
        ``K`` slots (rewound at every frame), compiled when ``compile`` is True or a compile mode."""
        step = self.position_step if compile is False else compiled_step(self.position_step, compile)
        with streaming(self.decoder, batch_size, max_len=self.num_codebooks):
            self._static_step = step
            try:
                yield
            finally:
                self._static_step = None

    def sample(
        self, h: torch.Tensor, first: torch.Tensor | None, pick: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Tokens ``(N, K)`` of one frame, position by position; ``pick(k, logits (N, V)) -> (N,)``
        chooses token ``k``. ``first (N,)`` fixes token 0 (when ``first=1``) instead of predicting it."""
        codes = torch.zeros(h.shape[0], self.num_codebooks, dtype=torch.long, device=h.device)
        if first is not None:
            codes[:, 0] = first
        if self._static_step is not None:
            return self._sample_static(h, codes, pick)
        for k in range(self.first, self.num_codebooks):
            with suspended(self):
                x = self.decoder(self._inputs(h, codes[:, : k + 1]))
            codes[:, k] = pick(k, self.heads[k - self.first](x[:, k]))
        return codes

    def _sample_static(
        self, h: torch.Tensor, codes: torch.Tensor, pick: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`sample` through the open static cache: position ``k`` reads ``context + embed_{k-1}(code_{k-1})``."""
        rewind_static_caches(self.decoder)
        ctx = self.context_proj(h)[:, None]  # (N, 1, d)
        x = ctx
        for k in range(self.num_codebooks):
            if k:
                x = ctx + self.embed[k - 1](codes[:, k - 1 : k])
            hidden = self._static_step(x)
            if k >= self.first:
                codes[:, k] = pick(k, self.heads[k - self.first](hidden))
        return codes
