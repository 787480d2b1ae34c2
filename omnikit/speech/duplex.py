"""Full-duplex speech in the Moshi manner: user and assistant audio modelled jointly with an inner monologue.

Every time step (one codec frame, 12.5 per second for a Mimi-like codec) holds ``1 + 2K`` tokens:
the assistant's text token (its inner monologue; ``text_pad_id`` between words), the assistant's
``K`` codes and the user's ``K`` codes. Codebook ``k`` of both speakers is delayed by
``delays[k]`` steps (default ``0, 1, 1, ...``: acoustic codebooks one step after the semantic
one) with :func:`omnikit.audio.delay_codes`, so a model works on a *step layout*::

    step      0    1    2    3          (K = 3, delays 0, 1, 1)
    text      w0   w1   w2   pad
    a0        a00  a01  a02  .          aXY: assistant codebook X of frame Y, . = pad id
    a1        .    a10  a11  a12
    a2        .    a20  a21  a22
    u0..u2    the user's codes, laid out the same way

The temporal transformer (a causal :class:`~omnikit.layers.Decoder` with a KV cache) reads at
step ``s`` the sum of the embeddings of all ``1 + 2K`` tokens of step ``s - 1`` and gives a
context; a text head predicts the step's text token and the depth transformer
(:class:`~omnikit.speech.CodePredictor`) the assistant's ``K`` codes, one after the other, the
first conditioned on the text token: the Talker's ``"mtp"`` strategy (:class:`MTPHead`) with the
text token as position 0. The user's codes are never predicted: they are read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.layouts import delay_codes, delay_mask, undelay_codes, undelay_logits
from omnikit.layers.decoder import Decoder, DecoderConfig
from omnikit.layers.masks import lengths_to_mask, masked_mean
from omnikit.models.decode_cache import CacheKind, CompileOption, check_cache_settings, compiled_step
from omnikit.models.sampling import GREEDY, Sampling, ban_tokens, sample_next
from omnikit.speech.depth import PREDICTOR_DEFAULTS, TemporalDepthConfig
from omnikit.speech.depth_head import MTPHead
from omnikit.speech.per_codebook_depth import PerCodebookDepthHead
from omnikit.speech.previous_step import PreviousStep
from omnikit.speech.talker import per_codebook_loss
from omnikit.streaming import StreamingContainer, streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_ids, check_positive, check_tensor

__all__ = ["DuplexConfig", "DuplexLoss", "DuplexModel", "DuplexStep"]


@dataclass
class DuplexConfig(TemporalDepthConfig):
    """Hyper-parameters of a :class:`DuplexModel`.

    Attributes:
        temporal: the temporal transformer (one step per codec frame).
        text_vocab: inner-monologue text ids ``[0, text_vocab)``.
        text_pad_id: the text id of steps without a new word (a token like any other).
        num_codebooks: ``K`` codebooks per speaker.
        codebook_size: codes ``[0, codebook_size)``; ``codebook_size`` itself is the pad id.
        delays: per-codebook delay in steps (default ``(0, 1, 1, ...)``).
        frame_rate: steps per second (the codec's frame rate).
        predictor: the depth transformer over the text token and the ``K`` codes of a step.
        per_codebook_depth: Moshi's depth decoder (:class:`~omnikit.speech.per_codebook_depth.PerCodebookDepth`:
            one weight per codebook, ``K`` positions, no rotary, no final norm, codes scored over
            ``codebook_size`` ids) instead of the shared :class:`~omnikit.speech.CodePredictor`
            (``K + 1`` positions, which also scores the pad id).

    ``configure`` / :meth:`from_flat` also take the flat keywords of :attr:`flat_fields` (``dim=``,
    ``depth_layers=`` ...; see ``docs/thinker_talker.md``).
    """

    temporal: DecoderConfig
    text_vocab: int = 32000
    text_pad_id: int = 0
    num_codebooks: int = 8
    codebook_size: int = 2048
    delays: tuple[int, ...] | None = None
    frame_rate: float = 12.5
    predictor: DecoderConfig = field(default_factory=lambda: DecoderConfig(**PREDICTOR_DEFAULTS))
    per_codebook_depth: bool = False

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = {
        **TemporalDepthConfig.flat_fields,
        "depth_dim": ("predictor", "dim"),
        "depth_layers": ("predictor", "depth"),
        "depth_heads": ("predictor", "num_heads"),
        "depth_mlp_hidden": ("predictor", "mlp_hidden"),
    }


@dataclass
class DuplexStep:
    """One step of :meth:`DuplexModel.stream`.

    Attributes:
        text: ``(B,)`` the assistant's inner-monologue token.
        codes: ``(B, K)`` the assistant's codes of this step (step layout: pad id where a codebook
            has not started yet).
        frame: ``(B, K)`` the assistant frame completed at this step (``max(delays)`` steps after it
            started), or None during the first ``max(delays)`` steps.
    """

    text: torch.Tensor
    codes: torch.Tensor
    frame: torch.Tensor | None


@dataclass
class DuplexLoss:
    """What :meth:`DuplexModel.loss` returns.

    Attributes:
        total: ``()`` ``text_weight * text + codes.mean()``.
        text: ``()`` cross-entropy of the text tokens.
        codes: ``(K,)`` cross-entropy of each assistant codebook.
    """

    total: torch.Tensor
    text: torch.Tensor
    codes: torch.Tensor


class DuplexModel(StreamingContainer, nn.Module):
    """``forward(text (B, S), assistant (B, K, S), user (B, K, S))`` on the step layout (see the module
    docstring and :meth:`to_steps`) -> logits ``(B, S, text_vocab + K * code_vocab)`` (``code_vocab``:
    ``codebook_size + 1``, the pad id included, or ``codebook_size`` with ``per_codebook_depth``).

    The logits are the text logits and the ``K`` codebooks' logits side by side (one tensor, so
    every parameter is behind it); :meth:`split_logits` separates them. Teacher forcing: step ``s``
    is predicted from steps ``< s`` and, for codebook ``k``, from the step's text token and codes
    ``< k``. Inside ``with model.streaming(B):`` chunks of steps give the full forward piece by
    piece (KV cache); :meth:`stream` is the live loop.
    """

    supports_streaming = True
    stream_chunk = 3

    def __init__(self, config: DuplexConfig) -> None:
        super().__init__()
        k = config.num_codebooks
        check_positive(k, "num_codebooks")
        if not config.frame_rate > 0:
            raise OmnikitValueError(f"`frame_rate` expected > 0 but got {config.frame_rate}")
        self.delays = tuple(config.delays) if config.delays is not None else (0,) + (1,) * (k - 1)
        delay_mask(k, 1, self.delays)  # validates the delays
        if not 0 <= config.text_pad_id < config.text_vocab:
            raise OmnikitValueError(f"`text_pad_id` expected in [0, {config.text_vocab}) but got {config.text_pad_id}")
        self.config = config
        self.text_bos, self.pad = config.text_vocab, config.codebook_size
        # one embedding table: the text ids (+ bos), then each of the 2K code streams (+ pad)
        rows = [config.text_vocab + 1] + [config.codebook_size + 1] * (2 * k)
        self._offsets = tuple(itertools.accumulate([0, *rows[:-1]]))
        self.embed = nn.Embedding(sum(rows), config.dim)
        self.previous = PreviousStep((self.text_bos,) + (self.pad,) * (2 * k))
        self.temporal = Decoder(config.temporal)
        # the text token is the head's position 0; state-dict keys ``text_head.*`` and ``depth.*``
        if config.per_codebook_depth:
            self.head: MTPHead | PerCodebookDepthHead = PerCodebookDepthHead(config)
        else:
            self.head = MTPHead(config, [config.text_vocab] + [config.codebook_size + 1] * k)
        self.text_head, self.depth = self.head.heads, self.head.predictor
        #: ids each codebook's logits score: the codes, and the pad id unless the depth is per-codebook
        self.code_vocab = config.codebook_size + (0 if config.per_codebook_depth else 1)

    @property
    def output_dim(self) -> int:
        return self.config.text_vocab + self.config.num_codebooks * self.code_vocab

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    def _check_streams(self, text: torch.Tensor, assistant: torch.Tensor, user: torch.Tensor) -> None:
        k, size = self.config.num_codebooks, self.config.codebook_size
        check_tensor(text, "text", ndim=2, floating=False)
        batch, steps = text.shape
        for name, codes in (("assistant", assistant), ("user", user)):
            check_tensor(codes, name, shape=(batch, k, steps), floating=False)
        if torch.compiler.is_compiling():
            return  # the ranges need the values: eager only
        for name, codes in (("assistant", assistant), ("user", user)):
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > size):
                raise OmnikitValueError(
                    f"`{name}` expected codes in [0, {size}] ({size}: pad) but got [{int(codes.min())}, "
                    f"{int(codes.max())}]"
                )
        if text.numel() and (int(text.min()) < 0 or int(text.max()) >= self.config.text_vocab):
            raise OmnikitValueError(
                f"`text` expected ids in [0, {self.config.text_vocab}) but got [{int(text.min())}, {int(text.max())}]"
            )

    def to_steps(
        self, text: torch.Tensor, assistant: torch.Tensor, user: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames -> step layout: ``text (B, T)``, ``assistant``/``user`` ``(B, K, T)`` ->
        ``(B, S)``, ``(B, K, S)``, ``(B, K, S)`` with ``S = T + max(delays)`` (codes delayed, pad id
        where a codebook has no code; text padded at the end with ``text_pad_id``)."""
        self._check_streams(text, assistant, user)
        tail = max(self.delays)
        steps_text = F.pad(text, (0, tail), value=self.config.text_pad_id)
        return (steps_text, delay_codes(assistant, self.pad, self.delays), delay_codes(user, self.pad, self.delays))

    def _embed(self, grid: torch.Tensor) -> torch.Tensor:
        """Token grid ``(B, 1 + 2K, S)`` -> summed embeddings ``(B, S, dim)``."""
        offsets = torch.tensor(self._offsets, device=grid.device)
        return self.embed(grid + offsets[:, None]).sum(dim=1)

    def forward(self, text: torch.Tensor, assistant: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """Args:
        text: ``(B, S)`` inner-monologue ids of each step.
        assistant: ``(B, K, S)`` the assistant's codes, step layout.
        user: ``(B, K, S)`` the user's codes, step layout.

        Returns: logits ``(B, S, output_dim)``; right padding never changes the valid steps.
        """
        self._check_streams(text, assistant, user)
        grid = torch.cat((text[:, None], assistant, user), dim=1)  # (B, 1 + 2K, S)
        h = self.temporal(self._embed(self.previous(grid)))  # (B, S, dim)
        return self.head.flat_logits(h, torch.cat((text[:, None], assistant), dim=1))

    def split_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S, output_dim)`` -> text logits ``(B, S, text_vocab)`` and code logits
        ``(B, S, K, code_vocab)`` (``codebook_size + 1`` with the pad id, ``codebook_size`` per-codebook)."""
        check_tensor(logits, "logits", shape=("B", "S", self.output_dim), floating=True)
        text, codes = logits.split([self.config.text_vocab, self.output_dim - self.config.text_vocab], dim=-1)
        return text, codes.unflatten(-1, (self.config.num_codebooks, self.code_vocab))

    def loss(
        self,
        logits: torch.Tensor,
        text: torch.Tensor,
        assistant: torch.Tensor,
        *,
        lengths: torch.Tensor | None = None,
        text_weight: float = 1.0,
    ) -> DuplexLoss:
        """Per-codebook and text cross-entropy of a teacher-forced pass.

        Args:
            logits: ``(B, T + max(delays), output_dim)`` from ``forward(*to_steps(text, assistant, user))``.
            text: ``(B, T)`` target text ids (frame layout, as given to :meth:`to_steps`).
            assistant: ``(B, K, T)`` target codes (frame layout).
            lengths: ``(B,)`` valid frames (None: all).
            text_weight: weight of the text loss in ``total``.
        """
        text_logits, code_logits = self.split_logits(logits)
        check_tensor(text, "text", shape=(logits.shape[0], logits.shape[1] - max(self.delays)), floating=False)
        frames = text.shape[1]
        mask = None if lengths is None else lengths_to_mask(lengths.to(text.device), frames)
        codes = per_codebook_loss(undelay_logits(code_logits, self.delays), assistant, mask)
        text_ce = F.cross_entropy(text_logits[:, :frames].float().transpose(1, 2), text, reduction="none")
        text_loss = text_ce.mean() if mask is None else masked_mean(text_ce, mask)
        return DuplexLoss(text_weight * text_loss + codes.mean(), text_loss, codes)

    def _user_column(self, frames: list[torch.Tensor], step: int) -> torch.Tensor:
        """The user's codes of ``step`` in the step layout ``(B, K)`` from the frames heard so far."""
        return torch.stack([
            frames[step - d][:, k] if step >= d else torch.full_like(frames[-1][:, k], self.pad)
            for k, d in enumerate(self.delays)
        ], dim=1)

    def _sample_step(
        self, h: torch.Tensor, step: int, text_sampling: Sampling, audio_sampling: Sampling,
        generator: torch.Generator | None, prompt: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text ``(B,)`` and assistant codes ``(B, K)`` of ``step`` from its context ``h (B, dim)``; the
        tokens of the ``prompt`` (text ``(B, T)``, frames ``(B, K, T)``) are taken, not sampled."""

        def pick(position: int, logits: torch.Tensor) -> torch.Tensor:  # position k + 1 is codebook k
            if position == 0:
                if prompt is not None and step < prompt[0].shape[1]:
                    return prompt[0][:, step]
                return sample_next(logits, text_sampling, generator=generator)
            frame = step - self.delays[position - 1]
            if prompt is not None and 0 <= frame < prompt[1].shape[2]:
                return prompt[1][:, position - 1, frame]
            if frame < 0:
                return torch.full((logits.shape[0],), self.pad, dtype=torch.long, device=logits.device)
            if logits.shape[-1] > self.pad:  # the shared depth transformer scores the pad id too
                logits = ban_tokens(logits, (self.pad,))
            return sample_next(logits, audio_sampling, generator=generator)

        column = self.head.next_column(h, step, pick)
        return column[:, 0], column[:, 1:]

    @torch.no_grad()
    def stream(
        self,
        user_frames: Iterable[torch.Tensor],
        *,
        text_sampling: Sampling = GREEDY,
        audio_sampling: Sampling = GREEDY,
        generator: torch.Generator | None = None,
        cache: CacheKind = "dynamic",
        max_len: int | None = None,
        compile: CompileOption = False,
        prompt: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Iterator[DuplexStep]:
        """The live loop: one :class:`DuplexStep` per user frame ``(B, K)`` (codes, frame layout) as it arrives.

        The assistant's step ``s`` is decided before user frame ``s`` is read (it sees the user up to
        frame ``s - 1``), then the whole step is appended to the KV cache. Greedy by default.
        ``cache="static"`` preallocates the temporal KV cache for ``max_len`` steps (required: a live
        stream has no known end; more frames raise) and the depth transformer's for its positions, so
        every step has fixed shapes; ``compile`` (True or a ``torch.compile`` mode) then compiles
        :meth:`decode_step` and the depth step once. ``prompt``: the assistant's first ``T`` steps of
        text ``(B, T)`` and frames ``(B, K, T)`` are these, not sampled (the user's first frames are the
        first ``user_frames``); sampling takes over after them (transformers' ``generate`` with a prompt).
        """
        if cache == "static" and max_len is None:
            raise OmnikitValueError("a live duplex stream with cache='static' needs `max_len` (steps it may last)")
        max_len = check_cache_settings(cache, max_len, compile, needed=1)
        decode_step = self.decode_step if compile is False else compiled_step(self.decode_step, compile)
        frames = iter(user_frames)
        first = next(frames, None)
        if first is None:
            return
        check_tensor(first, "user_frames", shape=("B", self.config.num_codebooks), floating=False)
        batch, tail = first.shape[0], max(self.delays)
        if prompt is not None:
            check_tensor(prompt[0], "prompt[0]", shape=(batch, "T"), floating=False)
            check_tensor(prompt[1], "prompt[1]", shape=(batch, self.config.num_codebooks, prompt[0].shape[1]),
                         floating=False)
        heard: list[torch.Tensor] = []
        said: list[torch.Tensor] = []
        depth_decoding = self.head.static_decoding(batch, compile) if max_len is not None else nullcontext()
        with streaming(self.temporal, batch, max_len=max_len), depth_decoding:
            column = torch.tensor(self.previous.start, device=first.device).repeat(batch, 1)
            for step, frame in enumerate(itertools.chain([first], frames)):
                check_tensor(frame, "user_frames", shape=(batch, self.config.num_codebooks), floating=False)
                check_ids(frame, "user_frames", self.pad + 1, what="codes (pad included)", sync=False)
                if max_len is not None and step >= max_len:
                    raise OmnikitValueError(f"`user_frames` ran past max_len={max_len} steps of the static cache")
                h = decode_step(column)  # context of this step
                text, codes = self._sample_step(h, step, text_sampling, audio_sampling, generator, prompt)
                heard.append(frame)
                said.append(codes)
                done = None
                if step >= tail:
                    done = undelay_codes(torch.stack(said[-tail - 1 :], dim=2), self.delays)[:, :, 0]
                yield DuplexStep(text, codes, done)
                column = torch.cat((text[:, None], codes, self._user_column(heard, step)), dim=1)

    def decode_step(self, column: torch.Tensor) -> torch.Tensor:
        """One temporal step inside an open stream: the previous step's tokens ``(B, 1 + 2K)`` -> the
        context ``(B, dim)`` of this step."""
        return self.temporal(self._embed(column[..., None]))[:, -1]

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Random text and codes of both speakers, ``lengths`` steps each (right padded)."""
        g = torch.Generator().manual_seed(seed)
        batch, steps, k = len(lengths), max(lengths), self.config.num_codebooks
        text = torch.randint(0, self.config.text_vocab, (batch, steps), generator=g)
        assistant, user = (torch.randint(0, self.config.codebook_size, (batch, k, steps), generator=g) for _ in "au")
        return ContractInputs({"text": text, "assistant": assistant, "user": user}, torch.tensor(list(lengths)),
                              {"text": 1, "assistant": 2, "user": 2})
