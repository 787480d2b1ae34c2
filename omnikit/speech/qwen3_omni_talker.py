"""Qwen3-Omni's MoE Talker with its residual code predictor, in the published layout.

- ``text_projection`` / ``hidden_projection``: ``Linear -> SiLU -> Linear`` (with biases) from the
  Thinker's width to the Talker's; the first projects Thinker token embeddings, the second
  Thinker hidden states (multimodal prompt positions).
- ``decoder``: causal MoE decoder layers (qk-norm, interleaved M-RoPE, softmax top-k routed
  SwiGLU experts plus a ``sigmoid``-gated shared expert), final RMSNorm; ``codec_head``
  predicts codebook 0 over the Talker's codec vocabulary (codes and special ids).
- ``code_predictor``: a small dense decoder run over the ``K`` positions of one frame:
  ``[talker hidden state, embed_0(code_0), embed_1(code_1), ..., embed_{K-2}(code_{K-2})]``
  where ``embed_0`` is the Talker's ``codec_embedding`` and ``embed_k`` (``k >= 1``) the
  predictor's own; position ``k`` predicts code ``k`` with head ``k - 1``.

The next frame's Talker input is the sum of the ``K`` code embeddings of the frame
(:meth:`Qwen3OmniTalker.embed_frames`) plus the projected Thinker reply token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.decoder import Decoder, DecoderConfig
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.models.decode_cache import CacheKind, CompileOption, check_cache_settings, compiled_step
from omnikit.models.sampling import GREEDY, Sampling, sample_next
from omnikit.moe import MoE, MoEConfig
from omnikit.streaming import streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_ids, check_input, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.parallel import ParallelPlan

__all__ = [
    "Qwen3OmniTalker", "Qwen3OmniTalkerConfig", "Qwen3TalkerScores", "ResidualCodePredictor", "ResizeMLP",
    "predictor_decoder_config", "talker_decoder_config",
]


#: Flat keyword -> (nested config, its field) of :class:`Qwen3OmniTalkerConfig`.
_TALKER_FLAT = {
    **transformer_flat("dim", "depth", "num_heads", "num_kv_heads", "head_dim", "norm_eps", "rope_base"),
    **{f"predictor_{flat}": ("predictor", name) for flat, name in (
        ("depth", "depth"), ("heads", "num_heads"), ("kv_heads", "num_kv_heads"), ("head_dim", "head_dim"),
        ("mlp_hidden", "mlp_hidden"), ("rope_base", "rope_base"), ("norm_eps", "norm_eps"))},
}


@flat_keywords
@dataclass
class Qwen3OmniTalkerConfig(NestedConfig):
    """Hyper-parameters of :class:`Qwen3OmniTalker` (transformers' ``Qwen3OmniMoeTalkerConfig``).

    Attributes:
        transformer: the Talker decoder (``text_config``): ``dim``, ``depth``, ``num_heads``, ``num_kv_heads``,
            ``head_dim``, ``norm_eps``, ``rope_base``, also read and given as flat keywords.
        mrope_sections: its M-RoPE sections (interleaved).
        vocab_size: codec vocabulary of codebook 0 (codes and special ids).
        num_experts, top_k, expert_hidden, shared_hidden, normalize_weights: its MoE layers.
        thinker_dim, projection_hidden: the two Thinker projections (``thinker_hidden_size``,
            ``text_config.intermediate_size``).
        num_codebooks: codes per frame (``num_code_groups``).
        codec_bos_id: id whose embedding starts the reply in :meth:`Qwen3OmniTalker.forward`.
        predictor: the code predictor (``code_predictor_config``), flat keywords ``predictor_depth``,
            ``predictor_heads``, ``predictor_kv_heads``, ``predictor_head_dim``, ``predictor_mlp_hidden``,
            ``predictor_rope_base``, ``predictor_norm_eps``; its width is always ``dim`` (set here).
        predictor_vocab_size: codes per residual codebook.
    """

    transformer: TransformerConfig = nested_field(TransformerConfig, norm_eps=1e-6, rope_base=1_000_000.0)
    thinker_dim: int
    vocab_size: int = 3072
    num_experts: int = 128
    top_k: int = 6
    expert_hidden: int = 384
    shared_hidden: int = 768
    normalize_weights: bool = True
    projection_hidden: int = 2048
    mrope_sections: tuple[int, int, int] = (24, 20, 20)
    num_codebooks: int = 16
    codec_bos_id: int = 2149
    predictor: TransformerConfig = nested_field(
        TransformerConfig, dim=1024, depth=5, num_heads=16, num_kv_heads=8, head_dim=128, mlp_hidden=3072,
        rope_base=1_000_000.0, norm_eps=1e-6)
    predictor_vocab_size: int = 2048
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = _TALKER_FLAT

    def __post_init__(self) -> None:
        if self.predictor.dim != self.transformer.dim:  # the predictor runs on the Talker's hidden states
            self.predictor = replace(self.predictor, dim=self.transformer.dim)


def talker_decoder_config(c: Qwen3OmniTalkerConfig) -> DecoderConfig:
    """The Talker decoder's :class:`DecoderConfig` (its MLPs are MoE layers)."""
    return DecoderConfig(
        dim=c.dim, depth=c.depth, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
        norm_eps=c.norm_eps, qk_norm=True, rope_base=c.rope_base, mrope_sections=tuple(c.mrope_sections),
        mrope_interleaved=True, backend=c.backend,
    )


def predictor_decoder_config(c: Qwen3OmniTalkerConfig) -> DecoderConfig:
    """The code predictor's dense :class:`DecoderConfig`."""
    return DecoderConfig(
        dim=c.dim, depth=c.predictor_depth, num_heads=c.predictor_heads, num_kv_heads=c.predictor_kv_heads,
        head_dim=c.predictor_head_dim, mlp_hidden=c.predictor_mlp_hidden, norm_eps=c.predictor_norm_eps,
        qk_norm=True, rope_base=c.predictor_rope_base, backend=c.backend,
    )


class Qwen3TalkerScores(NamedTuple):
    """Teacher-forced outputs of :meth:`Qwen3OmniTalker.forward`.

    Attributes:
        log_probs: ``(B, F, K)`` log-likelihood of each given code (``-log_probs.mean()`` is the loss).
        logits: ``(B, F, vocab_size)`` codebook-0 logits.
        residual_logits: ``(B, F, K - 1, predictor_vocab_size)`` logits of codebooks ``1..K-1``.
        last_hidden_state: ``(B, F, dim)`` the Talker's final states (the predictor's context).
    """

    log_probs: torch.Tensor
    logits: torch.Tensor
    residual_logits: torch.Tensor
    last_hidden_state: torch.Tensor


class ResizeMLP(nn.Module):
    """``fc2(silu(fc1(x)))`` with biases: ``(..., in_dim) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class ResidualCodePredictor(nn.Module):
    """Predicts codes ``1..K-1`` of a frame from the Talker state and code 0 (Qwen3-Omni's "MTP" module).

    ``forward(prefix (N, 2, dim), codes (N, K - 2)) -> logits (N, K - 1, vocab)``: ``prefix`` holds the
    Talker state and code 0's embedding, ``codes`` the residual codes ``1..K-2`` fed back (teacher forcing).
    """

    def __init__(self, config: DecoderConfig, num_codebooks: int, vocab_size: int) -> None:
        super().__init__()
        if num_codebooks < 2:
            raise OmnikitValueError(f"`num_codebooks` expected at least 2 but got {num_codebooks}")
        self.decoder = Decoder(config)
        self.embeddings = nn.ModuleList(nn.Embedding(vocab_size, config.dim) for _ in range(num_codebooks - 1))
        self.heads = nn.ModuleList(nn.Linear(config.dim, vocab_size, bias=False) for _ in range(num_codebooks - 1))

    def forward(self, prefix: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        fed = [self.embeddings[k](codes[:, k]) for k in range(codes.shape[1])]
        x = self.decoder(torch.cat([prefix, *(e[:, None] for e in fed)], dim=1))
        return torch.stack([head(x[:, k + 1]) for k, head in enumerate(self.heads[: x.shape[1] - 1])], dim=1)


class Qwen3OmniTalker(nn.Module):
    """The Qwen3-Omni Talker. See the module docstring for the layout.

    ``forward(codes (B, K, F), reply_embeds (B, F, thinker_dim), context=None, positions=None)``
    runs one teacher-forced pass: step ``f`` reads ``text_projection(reply_embeds[:, f])`` plus the
    summed code embeddings of frame ``f - 1`` (``codec_bos_id``'s embedding at ``f = 0``), after an
    optional prefix ``hidden_projection(context (B, C, thinker_dim))``; it returns
    :class:`Qwen3TalkerScores`. :meth:`codec_logits` and :meth:`residual_logits` are the two
    heads on their own (what transformers' Talker and code predictor compute).
    """

    def __init__(self, config: Qwen3OmniTalkerConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.text_projection = ResizeMLP(c.thinker_dim, c.projection_hidden, c.dim)
        self.hidden_projection = ResizeMLP(c.thinker_dim, c.projection_hidden, c.dim)
        self.codec_embedding = nn.Embedding(c.vocab_size, c.dim)
        moe = MoEConfig(dim=c.dim, num_experts=c.num_experts, top_k=c.top_k, expert_hidden=c.expert_hidden,
                        shared_hidden=c.shared_hidden, shared_gate=True, normalize_weights=c.normalize_weights)
        self.decoder = Decoder(talker_decoder_config(c), lambda _: MoE(moe))
        self.codec_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.code_predictor = ResidualCodePredictor(predictor_decoder_config(c), c.num_codebooks,
                                                    c.predictor_vocab_size)

    def parallel_plan(self) -> ParallelPlan:
        """Each code-predictor head is an FSDP unit (its decoder blocks are, as any decoder's); the
        predictor's embeddings also feed the Talker's input before the predictor runs, so they stay
        with the root."""
        return ParallelPlan(fsdp_units=list(self.code_predictor.heads))

    def codec_logits(
        self, inputs_embeds: torch.Tensor, positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs_embeds (B, T, dim)``, M-RoPE ``positions (3, B, T)`` (default ``0..T-1`` on every axis),
        ``key_padding_mask (B, T)`` (False on padding) -> ``(logits (B, T, vocab_size), hidden (B, T, dim))``."""
        check_tensor(inputs_embeds, "inputs_embeds", shape=("B", "T", self.config.dim), floating=True)
        if positions is None:
            batch, length = inputs_embeds.shape[:2]
            positions = torch.arange(length, device=inputs_embeds.device).expand(3, batch, length)
        hidden = self.decoder(inputs_embeds, positions=positions, key_padding_mask=key_padding_mask)
        return self.codec_head(hidden), hidden

    def residual_logits(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Talker states ``(N, dim)`` and the frame's codes ``(N, K)`` (teacher forcing) -> logits of codes
        ``1..K-1``: ``(N, K - 1, predictor_vocab_size)``."""
        k = self.config.num_codebooks
        check_tensor(codes, "codes", shape=(hidden.shape[0], k), floating=False)
        prefix = torch.stack([hidden, self.codec_embedding(codes[:, 0])], dim=1)
        return self.code_predictor(prefix, codes[:, 1 : k - 1])

    @torch.no_grad()
    def sample_residual(
        self,
        hidden: torch.Tensor,
        first: torch.Tensor,
        sampling: Sampling = GREEDY,
        *,
        generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic",
        compile: CompileOption = False,
    ) -> torch.Tensor:
        """Codes ``1..K-1`` of a frame one by one from the Talker state ``hidden (N, dim)`` and code 0
        ``first (N,)``; returns the frame's codes ``(N, K)`` (greedy by default). The code predictor decodes
        with a KV cache: one prefill of ``[hidden, embed(code 0)]``, then one position per code;
        ``cache="static"`` preallocates its ``K`` positions and ``compile`` compiles its decoder steps."""
        predictor, codes = self.code_predictor, [first]
        max_len = check_cache_settings(cache, None, compile, needed=self.config.num_codebooks)
        step = self._predictor_step if compile is False else compiled_step(self._predictor_step, compile)
        with streaming(predictor.decoder, hidden.shape[0], max_len=max_len):
            x = step(torch.stack([hidden, self.codec_embedding(first)], dim=1))
            for index, head in enumerate(predictor.heads, start=1):
                codes.append(sample_next(head(x), sampling, generator=generator))
                if index < len(predictor.heads):
                    x = step(predictor.embeddings[index - 1](codes[-1])[:, None])
        return torch.stack(codes, dim=1)

    def _predictor_step(self, x: torch.Tensor) -> torch.Tensor:
        """The code predictor's decoder on ``x (N, t, dim)`` inside its stream: the last state ``(N, dim)``."""
        return self.code_predictor.decoder(x)[:, -1]

    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, F)`` codes -> ``(B, F, dim)``: the sum of their ``K`` embeddings (the next Talker input)."""
        embeds = self.codec_embedding(codes[:, 0])
        for k, table in enumerate(self.code_predictor.embeddings, start=1):
            embeds = embeds + table(codes[:, k])
        return embeds

    def forward(
        self,
        codes: torch.Tensor,
        reply_embeds: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> Qwen3TalkerScores:
        c = self.config
        self.check_codes(codes)
        batch, _, frames = codes.shape
        check_input(reply_embeds, "reply_embeds", self, shape=(batch, frames, c.thinker_dim))
        x = self.text_projection(reply_embeds) + self.previous_frames(codes)
        if context is not None:
            check_input(context, "context", self, shape=(batch, "C", c.thinker_dim))
            x = torch.cat([self.hidden_projection(context), x], dim=1)
        return self.score(x, codes, positions)

    def check_codes(self, codes: torch.Tensor) -> None:
        """``codes (B, K, F)``: codebook 0 in the codec vocabulary, the others in the predictor's."""
        c = self.config
        check_tensor(codes, "codes", shape=("B", c.num_codebooks, "F"), floating=False)
        check_ids(codes[:, 0], "codes", c.vocab_size, what="codebook-0 codes")
        check_ids(codes[:, 1:], "codes", self.code_predictor.embeddings[0].num_embeddings, what="residual codes")

    def previous_frames(self, codes: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``codes (B, K, F)`` -> ``(B, F, dim)``: at frame ``f`` the summed embeddings of frame ``f - 1``;
        ``codec_bos_id``'s embedding at ``f = 0`` and, given ``valid (B, F)`` bool, after every invalid
        frame (so a left-padded item starts as it does alone)."""
        batch, c = codes.shape[0], self.config
        bos = self.codec_embedding.weight[c.codec_bos_id].expand(batch, 1, c.dim)
        previous = torch.cat([bos, self.embed_frames(codes[:, :, :-1])], dim=1)
        if valid is None:
            return previous
        after_valid = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
        return torch.where(after_valid[..., None], previous, bos)

    def score(
        self, x: torch.Tensor, codes: torch.Tensor, positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> Qwen3TalkerScores:
        """Teacher-forced scores of ``codes (B, K, F)`` from the Talker inputs ``x (B, T, dim)`` (``T >= F``:
        the last ``F`` positions are the frames'); ``positions``, ``key_padding_mask`` as in :meth:`codec_logits`."""
        c = self.config
        batch, _, frames = codes.shape
        logits, hidden = self.codec_logits(x, positions, key_padding_mask)
        logits, hidden = logits[:, -frames:], hidden[:, -frames:]
        flat = codes.permute(0, 2, 1).reshape(batch * frames, c.num_codebooks)
        residual = self.residual_logits(hidden.reshape(batch * frames, c.dim), flat)
        first = logits.log_softmax(-1).gather(-1, codes[:, 0, :, None])
        rest = residual.log_softmax(-1).gather(-1, flat[:, 1:, None]).view(batch, frames, -1)
        residual = residual.view(batch, frames, c.num_codebooks - 1, -1)
        return Qwen3TalkerScores(torch.cat([first, rest], dim=-1), logits, residual, hidden)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        c, batch, frames = self.config, len(lengths), max(lengths)
        codes = torch.randint(0, c.predictor_vocab_size, (batch, c.num_codebooks, frames), generator=g)
        reply = torch.randn(batch, frames, c.thinker_dim, generator=g)
        context = torch.randn(batch, 3, c.thinker_dim, generator=g)
        return ContractInputs({"codes": codes, "reply_embeds": reply, "context": context},
                              torch.tensor(list(lengths)), {"codes": 2, "reply_embeds": 1}, None)
