"""The cross-attention omni model: a text decoder that reads resampled media through gated cross-attention.

Media never enters the token sequence. Each media item is marked in the text by one marker
token (``media_tokens.video`` / ``.audio``); its encoder tokens are resampled to a fixed number
of latents (or, with ``num_latents=None``, attended as they are), and every ``every``-th decoder
block is wrapped in a :class:`FusionLayer` whose zero-initialised gates make the model equal to its
text-only decoder at initialisation.

Item ``k`` of a modality is the ``k``-th marker of that modality, counted row by row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.fusion.absent import absent_media_inputs, zero_of
from omnikit.fusion.adapters import AdaptedMedia, AudioAdapter, VideoAdapter
from omnikit.fusion.cross_attention import GatedCrossAttentionBlock, media_attention_mask, with_fusion_layers
from omnikit.fusion.media import HoldsAdapters
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.tmrope import VisualGrid
from omnikit.layers.masks import lengths_to_mask
from omnikit.models.language_model import CausalLM
from omnikit.streaming import StreamingContainer, StreamingModule, StreamingState
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_lengths, check_positive, check_tensor
from omnikit.video.temporal.resampler import PerceiverResampler

__all__ = ["CrossAttentionOmni"]


@dataclass
class _MarkerState(StreamingState):
    """What the stream has seen: every marker ``(modality, absolute position)`` per row, the
    number of positions, and which of them were valid (``(B, length)`` bool, None: all)."""

    batch_size: int
    offsets: list[list[tuple[str, int]]] | None = None
    length: int = 0
    valid: torch.Tensor | None = None


class _MarkerTracker(StreamingModule[_MarkerState]):
    """Finds media markers in ``input_ids``, remembering earlier chunks while streaming."""

    def __init__(self, media_tokens: MediaTokens) -> None:
        super().__init__()
        self.media_tokens = media_tokens

    def init_streaming_state(self, batch_size: int) -> _MarkerState:
        return _MarkerState(batch_size, [[] for _ in range(batch_size)])

    def forward(
        self, input_ids: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[list[list[tuple[str, int]]], int, torch.Tensor | None]:
        """Per row, ``(modality, absolute position)`` of every valid marker so far; the chunk's start;
        and the key padding mask over all positions so far (``valid``: this chunk's, ``(B, T)``)."""
        state = self.streaming_state
        start = 0 if state is None else state.length
        found: list[list[tuple[str, int]]] = [[] for _ in range(input_ids.shape[0])]
        for modality, token in self.media_tokens.as_dict().items():
            hits = input_ids == token
            if valid is not None:
                hits = hits & valid
            for b, t in hits.nonzero().tolist():
                found[b].append((modality, start + t))
        if state is None:
            return [sorted(row, key=lambda m: m[1]) for row in found], start, valid
        state.check_batch(input_ids.shape[0], "input_ids")
        for b, row in enumerate(found):
            state.offsets[b] = sorted(state.offsets[b] + row, key=lambda m: m[1])
        if valid is not None or state.valid is not None:
            past = state.valid if state.valid is not None else input_ids.new_ones(input_ids.shape[0], start, dtype=bool)
            now = valid if valid is not None else torch.ones_like(input_ids, dtype=torch.bool)
            state.valid = torch.cat((past, now), dim=1)
        state.length += input_ids.shape[1]
        return state.offsets, start, state.valid


class CrossAttentionOmni(HoldsAdapters, StreamingContainer, nn.Module):
    """Text decoder + gated cross-attention to resampled video and audio.

    Args:
        lm: the text-only language model; this model's copy of it has its blocks ``every - 1,
            2 * every - 1, ...`` wrapped in :class:`FusionLayer` s (``lm`` is not changed; see
            :func:`with_fusion_layers`).
        media_tokens: the marker token of each media modality.
        video, audio: adapters producing media tokens of width ``media_dim`` (held as
            ``adapters["video"]`` / ``adapters["audio"]``).
        adapters: more adapters ``{modality: adapter}``, one per modality of ``media_tokens``.
        media_dim: width of the media tokens and of the resampler.
        every: wrap one block in every ``every``.
        num_latents: resampler latents per media item; ``None``: no resampler, text attends to every
            encoder token of an item (as Llama-3.2-Vision does; items of different lengths are padded
            and the padding is masked).
        only_latest: text sees only the latest media item before it (Flamingo) instead of all.

    ``forward(input_ids (B, T), *, media={modality: tensor}, media_lengths={modality: (N,)}, lengths (B,))``
    -> logits ``(B, T, vocab)``; the keywords ``frames (N_v, F, C, H, W)``, ``audio_features
    (N_a, n_mels, L)`` and ``audio_lengths (N_a,)`` are ``media["video"]``, ``media["audio"]`` and
    ``media_lengths["audio"]``. ``lengths``: valid tokens of this call (right padding; of this chunk
    when streaming, earlier chunks' padding is remembered).

    ``run_absent_media = True`` (set by :func:`omnikit.distributed.parallelize`) runs an encoder
    whose modality is absent from the batch on a dummy input (:mod:`omnikit.fusion.absent`).
    """

    supports_streaming = True
    stream_chunk = 3

    def __init__(
        self,
        lm: CausalLM,
        *,
        media_tokens: MediaTokens,
        video: VideoAdapter | None = None,
        audio: AudioAdapter | None = None,
        adapters: Mapping[str, nn.Module] | None = None,
        media_dim: int,
        every: int = 2,
        num_latents: int | None = 8,
        num_heads: int | None = None,
        only_latest: bool = False,
    ) -> None:
        super().__init__()
        check_positive(every, "every")
        self._set_adapters(adapters, media_tokens.as_dict(), video=video, audio=audio)
        self.num_latents, self.only_latest = num_latents, only_latest
        self.run_absent_media = False
        self.markers = _MarkerTracker(media_tokens)
        heads = num_heads or lm.config.num_heads
        self.resampler = (None if num_latents is None
                          else PerceiverResampler(media_dim, num_latents, depth=1, num_heads=heads))
        fusions = {i: GatedCrossAttentionBlock(lm.config.dim, media_dim, heads)
                   for i in range(every - 1, len(lm.decoder.blocks), every)}
        self.lm = with_fusion_layers(lm, fusions)  # the caller's ``lm`` stays unwrapped

    @property
    def output_dim(self) -> int:
        return self.lm.config.vocab_size

    def encode_media(
        self,
        *,
        media: Mapping[str, torch.Tensor] | None = None,
        media_lengths: Mapping[str, torch.Tensor] | None = None,
        **keywords: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """``{modality: (items, num_latents, media_dim)}`` resampled latents of every item (without a
        resampler: ``(items, longest, media_dim)`` encoder tokens, zero padded); the media as ``media`` /
        ``media_lengths`` or the keywords ``frames``, ``audio_features``, ``audio_lengths``."""
        latents = self._encode(media=media, media_lengths=media_lengths, **keywords)[0]
        return {modality: tokens for modality, (tokens, _) in latents.items()}

    def _encode(
        self,
        *,
        media: Mapping[str, torch.Tensor] | None = None,
        media_lengths: Mapping[str, torch.Tensor] | None = None,
        **keywords: torch.Tensor | None,
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor | None]], torch.Tensor | None]:
        """Per modality, :meth:`encode_media`'s tokens and their valid counts per item ``(items,)`` (None:
        all valid); and the zero of the absent encoders' dummy runs (None without any)."""
        given = self.checked_media(media, media_lengths, **keywords)
        latents: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        absent: list[torch.Tensor] = []
        device = self.lm.embed.weight.device
        dummy = absent_media_inputs(self.adapters, device) if self.run_absent_media else {}
        for modality, adapter in self.adapters.items():
            if modality in given:
                latents[modality] = self._latents(adapter(given[modality].value, given[modality].lengths))
            elif modality in dummy:  # where the encoder would run
                absent.append(self._latents(adapter(*dummy[modality]))[0])
        return latents, zero_of(absent)

    def _latents(self, adapted: AdaptedMedia) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Grid items (equal sizes) as they are, items of token counts padded to the longest with their
        lengths, then :meth:`_resample` d."""
        if all(isinstance(item, VisualGrid) for item in adapted.items):
            return self._resample(adapted.tokens.view(len(adapted.items), -1, adapted.tokens.shape[-1]), None)
        counts = [int(n) for n in adapted.items]
        padded = torch.nn.utils.rnn.pad_sequence(list(adapted.tokens.split(counts)), batch_first=True)
        return self._resample(padded, torch.tensor(counts, device=padded.device))

    def _resample(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tokens (N, L, media_dim)`` with ``lengths (N,)`` valid (None: all) -> the resampled latents
        ``(N, num_latents, media_dim)`` and None, or without a resampler the tokens and ``lengths``."""
        if self.resampler is None:
            return tokens, lengths
        return self.resampler(tokens, lengths).hidden_states, None

    def _gather(
        self, latents: dict[str, tuple[torch.Tensor, torch.Tensor | None]], markers: list[list[tuple[str, int]]],
        device, complete: bool,
    ):
        """Per row, the latents of its items in marker order ``(B, I * R, D)`` (every item zero padded to the
        longest, ``R``), offsets ``(B, I)`` and valid latents per item ``(B, I)``.

        ``complete``: every item must have its marker (offline); a stream may not have reached some yet.
        """
        used = dict.fromkeys(latents, 0)
        rows, offsets = [], []
        for row in markers:
            items, where = [], []
            for modality, position in row:
                if modality not in latents:
                    raise OmnikitValueError(f"`input_ids` has a {modality} marker but no {modality} input was given")
                tokens, counts = latents[modality]
                if used[modality] >= tokens.shape[0]:
                    raise OmnikitValueError(
                        f"{modality}: `input_ids` holds more {modality} markers than the "
                        f"{tokens.shape[0]} {modality} item(s) given"
                    )
                count = torch.tensor(tokens.shape[1]) if counts is None else counts[used[modality]].cpu()
                items.append((tokens[used[modality]], count))
                where.append(position)
                used[modality] += 1
            rows.append(items)
            offsets.append(where)
        for modality, count in used.items():
            if count != latents[modality][0].shape[0] and complete:
                raise OmnikitValueError(
                    f"{modality}: {latents[modality][0].shape[0]} {modality} item(s) given but `input_ids` holds "
                    f"{count} {modality} marker(s)"
                )
        width = max((len(r) for r in rows), default=0)
        if width == 0:
            return None, None, None
        span = max(t.shape[0] for r in rows for t, _ in r)
        sample = next(t for r in rows for t, _ in r)
        media = sample.new_zeros(len(rows), width, span, sample.shape[-1])
        table = torch.full((len(rows), width), -1, dtype=torch.long)
        valid = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (items, where) in enumerate(zip(rows, offsets)):
            if items:
                padded = [nn.functional.pad(t, (0, 0, 0, span - t.shape[0])) for t, _ in items]
                media[b, : len(items)] = torch.stack(padded)
                table[b, : len(where)] = torch.tensor(where)
                valid[b, : len(items)] = torch.stack([c for _, c in items])
        return media.flatten(1, 2), table.to(device), valid.to(device)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        lengths: torch.Tensor | None = None,
        return_hidden: bool = False,
        **media: torch.Tensor | Mapping[str, torch.Tensor] | None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, vocab)`` (and the final hidden states with ``return_hidden``); ``media``: the
        keywords of :meth:`encode_media` (``media=``, ``media_lengths=``, ``frames=`` ...)."""
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        chunk_valid = None
        if lengths is not None:  # valid tokens of this call (of this chunk when streaming)
            lengths = check_lengths(lengths, "lengths", batch=input_ids.shape[0], max_len=input_ids.shape[1])
            chunk_valid = lengths_to_mask(lengths.to(input_ids.device), input_ids.shape[1])
        markers, start, valid = self.markers(input_ids, chunk_valid)
        latents, zero = self._encode(**media)
        media, offsets, counts = self._gather(latents, markers, input_ids.device,
                                              complete=self.markers.streaming_state is None)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        media_mask = None
        if media is not None:
            span = media.shape[1] // offsets.shape[1]
            media_mask = media_attention_mask(offsets, positions, span, only_latest=self.only_latest)
            if self.resampler is None:  # items shorter than the longest are padded
                filled = torch.arange(span, device=counts.device) < counts[..., None]  # (B, I, span)
                media_mask = media_mask & filled.flatten(1)[:, None, None]
        hidden = self.lm.decoder(self.lm.embed(input_ids), positions=positions, key_padding_mask=valid,
                                 block_kwargs={"media": media, "media_mask": media_mask})
        logits = self.lm.lm_head(hidden)
        if zero is not None:
            logits, hidden = logits + zero, hidden + zero
        return (logits, hidden) if return_hidden else logits

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Per item: a video marker, text, an audio marker at position 4, text (right padded)."""
        g = torch.Generator().manual_seed(seed)
        batch = len(lengths)
        enc = self.video.encoder
        frames = torch.randn(batch, enc.tubelet, enc.in_channels, 2 * enc.patch, 2 * enc.patch, generator=g)
        mel = torch.randn(batch, self.audio.encoder.config.n_mels, 8, generator=g)
        tokens = self.markers.media_tokens
        ids = torch.randint(max(tokens.as_dict().values()) + 1, self.lm.config.vocab_size, (batch, max(lengths)),
                            generator=g)
        ids[:, 0], ids[:, 4] = tokens.video, tokens.audio
        return ContractInputs(
            {"input_ids": ids, "frames": frames, "audio_features": mel, "audio_lengths": torch.full((batch,), 8),
             "lengths": torch.tensor(list(lengths))},
            torch.tensor(list(lengths)), {"input_ids": 1}, "lengths",
        )
