"""The Talker: predicts multi-codebook codec codes, conditioned on the Thinker.

At frame step ``s`` the Talker's input is the sum of the previous frame's code embeddings and
the Thinker's reply token ``s`` (``text_proj(embedding + hidden state)``; a learned pad vector
once the reply has no token left). An optional context prefix (the Thinker's prompt states) is
prepended. A strategy (a :class:`~omnikit.speech.heads.TalkerHead` registered by name) predicts
the ``K`` codes of a frame; three are built in:

- ``"delay"`` (MusicGen): codebook ``k`` is delayed by ``k`` steps and ``K`` heads predict one
  column of the delayed layout per step (frame ``f`` completes at step ``f + K - 1``);
- ``"depth"`` (Moshi): a small depth transformer runs over the ``K`` codebooks of each frame,
  conditioned on the temporal transformer's state;
- ``"mtp"`` (Qwen3-Omni): the Talker's head predicts codebook 0 and a small code predictor
  (the depth transformer) the remaining ``K - 1``.

Code ids ``[0, codebook_size)`` are codec codes; ``bos = codebook_size`` starts (and pads) a
sequence, ``eos = codebook_size + 1`` on codebook 0 ends the speech.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.decoder import Decoder, DecoderConfig
from omnikit.layers.masks import lengths_to_mask, masked_mean
from omnikit.models.decode_cache import CacheKind, CompileOption, check_cache_settings, compiled_step
from omnikit.models.sampling import GREEDY, Sampling, ban_tokens, check_stream_settings, sample_next
from omnikit.moe import MoE, MoEConfig
from omnikit.speech import delay_head, depth_head  # noqa: F401  (register the built-in strategies)
from omnikit.speech.depth import PREDICTOR_DEFAULTS, TemporalDepthConfig
from omnikit.speech.heads import TALKER_HEADS, Pick, build_talker_head
from omnikit.streaming import StreamingContainer, streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    check_finite,
    check_ids,
    check_lengths,
    check_positive,
    check_tensor,
)

__all__ = ["STRATEGIES", "Talker", "TalkerConfig", "TalkerStrategy", "codebook_loss", "per_codebook_loss"]

#: The built-in strategies, ``("delay", "depth", "mtp")``; ``TALKER_HEADS`` holds every registered one.
STRATEGIES = tuple(TALKER_HEADS)


#: The built-in Talker strategies' names, or the name of one added with ``register_talker_head``
#: (checked against the registry when the Talker is built).
TalkerStrategy = Literal["delay", "depth", "mtp"] | str

@dataclass
class TalkerConfig(TemporalDepthConfig):
    """Hyper-parameters of a :class:`Talker`.

    Attributes:
        temporal: the temporal decoder (one step per frame).
        thinker_dim: width of the Thinker states it is conditioned on.
        num_codebooks, codebook_size: the codec's code layout.
        strategy: a registered Talker strategy: ``"delay"``, ``"depth"``, ``"mtp"`` or one added with
            :func:`~omnikit.speech.heads.register_talker_head`.
        predictor: the code predictor over the codebooks of a frame (depth / mtp).
        num_experts, top_k, expert_hidden, shared_hidden: MoE feed-forward layers in the temporal
            decoder (Qwen3-Omni's Talker; 0 experts: dense), shared expert sigmoid-gated.
        embed_in_thinker_space: code embeddings have the Thinker's width and are added to the
            reply states before ``text_proj`` (Qwen2.5-Omni) instead of after it.

    ``configure`` / :meth:`from_flat` also take the flat keywords of :attr:`flat_fields`
    (``dim=``, ``predictor_depth=`` ...; see ``docs/thinker_talker.md``).
    """

    temporal: DecoderConfig
    thinker_dim: int
    num_codebooks: int = 4
    codebook_size: int = 64
    strategy: TalkerStrategy = "delay"
    predictor: DecoderConfig = field(default_factory=lambda: DecoderConfig(**PREDICTOR_DEFAULTS))
    num_experts: int = 0
    top_k: int = 2
    expert_hidden: int = 0
    shared_hidden: int = 0
    embed_in_thinker_space: bool = False

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = {
        **TemporalDepthConfig.flat_fields,
        "predictor_dim": ("predictor", "dim"),
        "predictor_depth": ("predictor", "depth"),
        "predictor_heads": ("predictor", "num_heads"),
        "predictor_kv_heads": ("predictor", "num_kv_heads"),
        "predictor_head_dim": ("predictor", "head_dim"),
        "predictor_mlp_hidden": ("predictor", "mlp_hidden"),
    }

    @property
    def vocab(self) -> int:
        """Ids per codebook: the codes plus ``bos`` and ``eos``."""
        return self.codebook_size + 2


def codebook_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy per codebook, then averaged: ``logits (B, F, K, V)``, ``codes (B, K, F)``,
    ``mask (B, F)`` bool (valid frames). Returns ``()``; :func:`per_codebook_loss` keeps the ``K``."""
    return per_codebook_loss(logits, codes, mask).mean()


def per_codebook_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(K,)`` cross-entropy of each codebook over the valid frames."""
    check_tensor(logits, "logits", ndim=4, floating=True)
    batch, frames, k, _ = logits.shape
    check_tensor(codes, "codes", shape=(batch, k, frames), floating=False)
    loss = F.cross_entropy(logits.float().permute(0, 3, 2, 1), codes, reduction="none")  # (B, K, F)
    if mask is None:
        return loss.mean(dim=(0, 2))
    return masked_mean(loss, mask[:, None, :], dim=(0, 2))


class Talker(StreamingContainer, nn.Module):
    """``codes (B, K, F)`` + Thinker reply states ``text (B, N, thinker_dim)`` -> logits ``(B, F, K, vocab)``.

    Teacher forcing: the logits at frame ``f`` are predicted from frames ``< f`` (and codes
    ``< k`` of frame ``f`` for depth / mtp). ``lengths (B,)``: valid frames (and reply tokens
    beyond them are ignored).
    """

    supports_streaming = False

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        check_positive(config.num_codebooks, "num_codebooks")
        self.config = config
        self.bos, self.eos = config.codebook_size, config.codebook_size + 1
        moe = None
        if config.num_experts:
            moe_config = MoEConfig(
                dim=config.dim, num_experts=config.num_experts, top_k=config.top_k, expert_hidden=config.expert_hidden,
                shared_hidden=config.shared_hidden, shared_gate=bool(config.shared_hidden),
            )
            moe = lambda _: MoE(moe_config)
        self.decoder = Decoder(config.temporal, moe)
        width = config.thinker_dim if config.embed_in_thinker_space else config.dim
        self.code_embed = nn.ModuleList(nn.Embedding(config.vocab, width) for _ in range(config.num_codebooks))
        self.text_proj = nn.Linear(config.thinker_dim, config.dim)
        self.text_pad = nn.Parameter(torch.zeros(config.thinker_dim))
        self.heads: nn.Module | None = None
        self.predictor: nn.Module | None = None
        self.head = build_talker_head(config)
        for name, module in self.head.modules.items():  # the Talker owns them: state-dict keys ``name.*``
            setattr(self, name, module)

    @property
    def output_dim(self) -> int:
        return self.config.vocab

    @property
    def delay(self) -> int:
        """Steps between a frame's first code and its completion (``K - 1`` for delay, else 0)."""
        return self.head.delay

    def _reply_states(self, text: torch.Tensor, steps: int, lengths: torch.Tensor | None) -> torch.Tensor:
        """``(B, steps, thinker_dim)``: the reply state of each step, the pad vector past each reply's end."""
        batch, n, _ = text.shape
        take = min(n, steps)
        states = self.text_pad.to(text.dtype).expand(batch, steps, -1).clone()
        valid = torch.ones(batch, take, dtype=torch.bool, device=text.device)
        if lengths is not None:
            valid = lengths_to_mask(lengths.to(text.device), take)
        states[:, :take] = torch.where(valid[..., None], text[:, :take], states[:, :take])
        return states

    def _step_inputs(self, previous_codes: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``(B, S, dim)`` from the previous codes ``(B, K, S)`` and reply states."""
        codes = self._embed_codes(previous_codes)
        if self.config.embed_in_thinker_space:
            return self.text_proj(codes + states)
        return codes + self.text_proj(states)

    def _embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, S)`` -> ``(B, S, dim)``: the sum of the codebooks' embeddings."""
        return sum(emb(codes[:, k]) for k, emb in enumerate(self.code_embed))

    def forward(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
        codes: ``(B, K, F)`` target codes in ``[0, vocab)``.
        text: ``(B, N, thinker_dim)`` Thinker reply states (embedding + hidden state per token).
        context: ``(B, P, thinker_dim)`` optional prompt states prepended as a prefix.
        lengths: ``(B,)`` valid frames; codes and reply tokens past them are replaced by padding.
        """
        cfg = self.config
        check_tensor(codes, "codes", shape=("B", cfg.num_codebooks, "F"), floating=False)
        check_ids(codes, "codes", cfg.vocab, what="codes")
        check_tensor(text, "text", shape=(codes.shape[0], "N", cfg.thinker_dim), floating=True, like=self)
        batch, k, frames = codes.shape
        if lengths is not None:
            lengths = check_lengths(lengths, "lengths", batch=batch, max_len=frames)
            codes = torch.where(lengths_to_mask(lengths.to(codes.device), frames)[:, None], codes, self.bos)
        layout = self.head.layout(codes)
        steps = layout.shape[2]
        previous = torch.cat((layout.new_full((batch, k, 1), self.bos), layout[:, :, :-1]), dim=2)
        x = self._step_inputs(previous, self._reply_states(text, steps, lengths))
        check_finite(x, "text", "in the reply states of valid frames")  # padding was replaced above
        prefix = 0
        if context is not None:
            check_tensor(context, "context", shape=(batch, "P", cfg.thinker_dim), floating=True)
            prefix = context.shape[1]
            x = torch.cat((self.text_proj(context), x), dim=1)
        h = self.decoder(x)[:, prefix:]  # (B, steps, dim)
        return self.head.logits(h, codes)  # (B, F, K, V)

    @torch.no_grad()
    def stream_codes(
        self,
        text_steps: Iterator[torch.Tensor],
        *,
        batch_size: int,
        context: torch.Tensor | None = None,
        max_frames: int = 200,
        min_frames: int = 0,
        frames_per_token: int = 1,
        sampling: Sampling = GREEDY,
        generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic",
        max_len: int | None = None,
        compile: CompileOption = False,
    ) -> Iterator[torch.Tensor]:
        """Yield each complete frame's codes ``(B, K)`` as soon as it is decided.

        ``text_steps`` yields the Thinker's reply states ``(B, thinker_dim)`` one token at a time
        (while the Thinker is still generating); each token conditions ``frames_per_token``
        steps, after which the pad vector is used. Stops at ``eos`` on codebook 0 (all items; never
        before ``min_frames`` frames) or after ``max_frames`` frames; an item that has ended yields
        zeros.

        ``cache="static"`` preallocates the temporal decoder's KV cache for ``max_len`` steps (default:
        the context, ``max_frames`` and the strategy's delay) and the code predictor's for ``K``
        positions, so every step has fixed shapes; ``compile`` (True or a ``torch.compile`` mode such
        as ``"reduce-overhead"``) then compiles :meth:`decode_step` and the predictor's step once.
        """
        check_stream_settings(batch_size=batch_size, max_frames=max_frames, frames_per_token=frames_per_token,
                              min_frames=min_frames, sampling=sampling)
        prefix = 0
        if context is not None:
            check_tensor(context, "context", shape=(batch_size, "P", self.config.thinker_dim), floating=True)
            prefix = context.shape[1]
        max_len = check_cache_settings(cache, max_len, compile, needed=prefix + max_frames + self.delay)
        decode_step = self.decode_step if compile is False else compiled_step(self.decode_step, compile)
        device = self.text_pad.device
        column = torch.full((batch_size, self.config.num_codebooks), self.bos, dtype=torch.long, device=device)
        pad = self.text_pad.expand(batch_size, -1).contiguous()  # (B, thinker_dim), laid out as a reply state
        history: list[torch.Tensor] = []  # sampled columns of the step layout
        done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        pending: torch.Tensor | None = None
        text_iter = iter(text_steps)
        emitted = 0
        head_decoding = self.head.static_decoding(batch_size, compile) if max_len is not None else nullcontext()
        with streaming(self.decoder, batch_size, max_len=max_len), head_decoding:
            if context is not None:
                self.decoder(self.text_proj(context))
            step = 0
            while emitted < max_frames:
                if step % frames_per_token == 0:
                    pending = next(text_iter, None)
                    if pending is not None:
                        check_tensor(pending, "text_steps", shape=(batch_size, self.config.thinker_dim), floating=True)
                        if max_len is not None:  # one layout for every step (a compiled step guards on strides)
                            pending = pending.contiguous()
                h = decode_step(column, pad if pending is None else pending)
                column = self.head.next_column(h, step, self._pick(step >= min_frames, sampling, generator))
                step += 1
                history.append(column)
                frame = self.head.frame(history)
                if frame is None:
                    continue
                done = done | (frame[:, 0] == self.eos)
                if bool(done.all()):
                    return
                yield frame.masked_fill(done[:, None], 0)
                emitted += 1

    def decode_step(self, column: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One step of the temporal decoder inside an open stream: the previous column of the step
        layout ``(B, K)`` and the reply state ``(B, thinker_dim)`` -> hidden ``(B, dim)``."""
        return self.decoder(self._step_inputs(column[:, :, None], state[:, None]))[:, 0]

    def _pick(self, allow_eos: bool, sampling: Sampling, generator: torch.Generator | None) -> Pick:
        """Sample code ``k`` from ``logits (B, vocab)``, never ``bos`` (nor ``eos`` but on codebook 0 when allowed)."""
        banned = ((self.bos, self.eos), (self.bos,) if allow_eos else (self.bos, self.eos))

        def pick(k: int, logits: torch.Tensor) -> torch.Tensor:
            return sample_next(ban_tokens(logits, banned[k == 0]), sampling, generator=generator)

        return pick

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        cfg = self.config
        batch, frames = len(lengths), max(lengths)
        codes = torch.randint(0, cfg.codebook_size, (batch, cfg.num_codebooks, frames), generator=g)
        text = torch.randn(batch, frames, cfg.thinker_dim, generator=g)
        return ContractInputs({"codes": codes, "text": text, "lengths": torch.tensor(list(lengths))},
                              torch.tensor(list(lengths)), {"codes": 2, "text": 1}, "lengths")
