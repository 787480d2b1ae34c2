"""The cross-attention omni model: a text decoder that reads resampled media through gated cross-attention.

Media never enters the token sequence. Each media item is marked in the text by one marker
token (``media_tokens.video`` / ``.audio``); its encoder tokens are resampled to a fixed number
of latents (or, with ``num_latents=None``, attended as they are), and every ``every``-th decoder
block is wrapped in a :class:`FusionLayer` whose zero-initialised gates make the model equal to its
text-only decoder at initialisation.

Streaming: items are matched to markers as below (item ``k`` of a modality is its ``k``-th marker
counted row by row), over all the markers a stream has seen so far, so a stream equals one full call
only while no chunk brings a marker to a row above a row whose marker of the same modality came in an
earlier chunk (that marker's item would change after its outputs were streamed): in eager mode such a
chunk raises, naming both markers; a compiled stream does not check. Given ``media_rows`` (the row of
each item), a row's markers read its own items instead, in the order given, and a stream's rows may
bring their markers in any order.

Item ``k`` of a modality is the ``k``-th marker of that modality, counted row by row. Markers and
items are matched with tensor ops (running counts, no host reads while tracing), so the model compiles
with ``fullgraph=True``; an adapter that hands over packed tokens with token counts as items (not
grids, not a padded :class:`EncoderOutput`) is padded by reading those counts, which tracing cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.fusion.absent import encode_media
from omnikit.fusion.adapters import AudioAdapter, VideoAdapter
from omnikit.fusion.cross_attention import GatedCrossAttentionBlock, media_attention_mask, with_fusion_layers
from omnikit.fusion.media import HoldsAdapters
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.tmrope import VisualGrid
from omnikit.layers.masks import lengths_to_mask
from omnikit.models.language_model import CausalLM
from omnikit.outputs import EncoderOutput
from omnikit.streaming import StreamingContainer, StreamingModule, StreamingState
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    OmnikitTypeError,
    OmnikitValueError,
    check_ids,
    check_lengths,
    check_positive,
    check_tensor,
)
from omnikit.video.temporal.resampler import PerceiverResampler

__all__ = ["CrossAttentionOmni"]


def _items_per_row(owner: torch.Tensor, batch: int) -> torch.Tensor:
    """``owner (N,)`` the row of each item -> ``(batch,)`` the number of items of each row."""
    return torch.zeros(batch, dtype=owner.dtype, device=owner.device).scatter_add_(0, owner, torch.ones_like(owner))


def _row_items(hits: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``hits (B, S)`` a modality's markers and ``owner (N,)`` the row of each of its items -> the markers
    that have an item (a row's ``j``-th marker, ``j`` below the row's item count) and the item of each
    marker ``(B, S)`` (the ``j``-th item of the row in the given order; meaningless where no marker)."""
    owner = owner.to(hits.device)
    per_row = _items_per_row(owner, hits.shape[0])
    nth = hits.long().cumsum(1) - 1
    first = per_row.cumsum(0) - per_row  # where each row's items start among the items sorted by row
    slot = (first[:, None] + nth).clamp(0, owner.shape[0] - 1)
    return hits & (nth < per_row[:, None]), torch.argsort(owner, stable=True)[slot]


@dataclass
class _MarkerState(StreamingState):
    """What the stream has seen: :meth:`_MarkerTracker.forward`'s marker kinds over all positions so far
    (``(B, length)``, None before the first chunk), the number of positions, and which of them were valid
    (``(B, length)`` bool, None: all)."""

    batch_size: int
    kinds: torch.Tensor | None = None
    length: int = 0
    valid: torch.Tensor | None = None


class _MarkerTracker(StreamingModule[_MarkerState]):
    """Finds media markers in ``input_ids``, remembering earlier chunks while streaming."""

    def __init__(self, media_tokens: MediaTokens) -> None:
        super().__init__()
        self.media_tokens = media_tokens

    def init_streaming_state(self, batch_size: int) -> _MarkerState:
        return _MarkerState(batch_size)

    def forward(
        self, input_ids: torch.Tensor, valid: torch.Tensor | None, per_row: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """``(B, S)`` int64 over all positions so far: the index of the marker's modality in
        ``media_tokens.as_dict()`` at every valid marker, ``-1`` elsewhere; the chunk's start; and the
        key padding mask over all positions so far (``valid``: this chunk's, ``(B, T)``). ``per_row``: the
        modalities whose items are assigned per row (never reassigned by a later chunk)."""
        kinds = torch.full_like(input_ids, -1, dtype=torch.long)
        for index, token in enumerate(self.media_tokens.as_dict().values()):
            kinds = kinds.masked_fill(input_ids == token, index)
        if valid is not None:
            kinds = kinds.masked_fill(~valid, -1)
        state = self.streaming_state
        if state is None:
            return kinds, 0, valid
        state.check_batch(input_ids.shape[0], "input_ids")
        start = state.length
        if state.kinds is not None and not torch.compiler.is_compiling():
            self._check_item_order(state.kinds, kinds, per_row)
        state.kinds = kinds if state.kinds is None else torch.cat((state.kinds, kinds), dim=1)
        if valid is not None or state.valid is not None:
            past = state.valid if state.valid is not None else input_ids.new_ones(input_ids.shape[0], start, dtype=bool)
            now = valid if valid is not None else torch.ones_like(input_ids, dtype=torch.bool)
            state.valid = torch.cat((past, now), dim=1)
        state.length += input_ids.shape[1]
        return state.kinds, start, state.valid

    def _check_item_order(self, seen: torch.Tensor, chunk: torch.Tensor, per_row: tuple[str, ...]) -> None:
        """Raise if this chunk holds a marker in a row above one whose marker of the same modality came in an
        earlier chunk: items are counted row by row, so that earlier marker's item would change (it was
        streamed with another item than one full call gives it). ``seen (B, S)``, ``chunk (B, T)``: marker
        kinds. One host read, in eager mode only."""
        names = list(self.media_tokens.as_dict())
        rows = torch.arange(seen.shape[0], device=seen.device)
        modalities = torch.arange(len(names), device=seen.device)[:, None, None]
        last_seen = torch.where((seen == modalities).any(2), rows, -1).amax(1)  # (M,)
        first_new = torch.where((chunk == modalities).any(2), rows, seen.shape[0]).amin(1)
        for index, (last, first) in enumerate(zip(last_seen.tolist(), first_new.tolist())):
            name = names[index]
            if first < last and name not in per_row:
                now = seen.shape[1] + int((chunk[first] == index).nonzero()[0])
                before = int((seen[last] == index).nonzero()[-1])
                raise OmnikitValueError(
                    f"{name}: row {first}'s {name} marker at position {now} comes after row {last}'s {name} "
                    f"marker at position {before} of an earlier chunk; items are counted row by row (item k is "
                    f"the k-th marker, rows in order), so row {last} was streamed with another {name} item than "
                    f"one full call gives it. Give `media_rows` (the row of each item), or stream rows separately"
                )


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

    Streaming (``with model.streaming(B):``, the media given whole at every call): the adapters run offline
    on whole items at every call (never chunk by chunk). Markers are counted row by row over the whole
    stream; a chunk bringing a marker to a row above a row that already streamed a marker of the same
    modality raises in eager mode (see the module docstring); with ``media_rows`` (``{modality: (N,)}``,
    the row of each item) every row reads its own items and rows stream in any order.

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
        resampler: ``(items, L, media_dim)`` encoder tokens, zero past each item's length, ``L`` the encoder's
        padded output length); the media as ``media`` /
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
        return encode_media(self.adapters, given, run_absent=self.run_absent_media, device=self.lm.embed.weight.device,
                            encode=self._latents, tensors=lambda latents: [latents[0]])

    def _latents(
        self, adapter: nn.Module, value: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An adapter's items padded: as it hands them over when it gives a padded :class:`EncoderOutput`
        (``(N, L, D)`` tokens and lengths, no host reads, as :class:`AudioAdapter` does); grid items (equal
        sizes) as they are; packed items of token counts padded to the longest (reading the counts); then
        :meth:`_resample` d."""
        adapted = adapter(value, lengths)
        if isinstance(adapted.media, EncoderOutput):
            return self._resample(adapted.media.hidden_states, adapted.media.lengths)
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

    def _check_markers(
        self, latents: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]], kinds: torch.Tensor, complete: bool,
        rows: Mapping[str, torch.Tensor],
    ) -> None:
        """Raise unless every marker in ``kinds`` has an item of its modality (and, ``complete``, every item
        its marker), in its own row for the modalities of ``rows``. Host reads, in eager mode only."""
        names = list(self.markers.media_tokens.as_dict())
        found = torch.stack([(kinds == index).sum() for index in range(len(names))]).tolist() if names else []
        for modality, count in zip(names, found):
            if count and modality not in latents:
                raise OmnikitValueError(f"`input_ids` has a {modality} marker but no {modality} input was given")
            items = latents[modality][0].shape[0] if modality in latents else 0
            if count > items:
                raise OmnikitValueError(
                    f"{modality}: `input_ids` holds more {modality} markers than the {items} {modality} item(s) given"
                )
            if complete and modality in latents and count != items:
                raise OmnikitValueError(
                    f"{modality}: {items} {modality} item(s) given but `input_ids` holds {count} {modality} marker(s)"
                )
        for modality, owner in rows.items():
            markers = (kinds == names.index(modality)).sum(1).tolist()
            for row, (count, items) in enumerate(zip(markers, _items_per_row(owner, kinds.shape[0]).tolist())):
                if count > items or (complete and count != items):
                    raise OmnikitValueError(
                        f"{modality}: row {row} of `input_ids` holds {count} {modality} marker(s) but "
                        f"`media_rows[{modality!r}]` gives it {items} item(s)"
                    )

    def _gather(
        self, latents: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]], kinds: torch.Tensor, complete: bool,
        rows: Mapping[str, torch.Tensor],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Per row, the latents of its items in marker order ``(B, I * R, D)`` (every item zero padded to the
        longest, ``R``), the position of each item's marker ``(B, I)`` (``-1``: no item in that slot) and its
        valid latents ``(B, I)``; all None when no row holds a marker of a modality given.

        ``kinds (B, S)``: :class:`_MarkerTracker`'s marker kinds. Item ``k`` of a modality is its ``k``-th
        marker counted row by row (a running count over the flattened rows); for a modality of ``rows``
        (``{modality: (N,)}`` the row of each item) it is the ``j``-th of its row's items for the row's
        ``j``-th marker. ``I`` is the most items a row holds (one host read) in eager mode; while compiling it
        is ``min(items given, S)``, read from the shapes (the slots past a row's items are masked out).
        ``complete``: every item must have its marker (offline); a stream may not have reached some yet.
        """
        compiling = torch.compiler.is_compiling()
        if not compiling:
            self._check_markers(latents, kinds, complete, rows)
        if not latents:
            return None, None, None
        names = list(self.markers.media_tokens.as_dict())
        span = max(tokens.shape[1] for tokens, _ in latents.values())
        items, valid, first = [], [], 0
        item = torch.full_like(kinds, -1)  # every marker's item among all modalities' items
        for modality, (tokens, counts) in latents.items():
            hits = kinds == names.index(modality)
            if modality in rows:
                hits, index = _row_items(hits, rows[modality])
            else:
                index = hits.flatten().cumsum(0).view_as(kinds) - 1
                hits = hits & (index < tokens.shape[0])  # markers past the items given: an eager error
            item = torch.where(hits, index + first, item)
            first += tokens.shape[0]
            items.append(nn.functional.pad(tokens, (0, 0, 0, span - tokens.shape[1])))
            valid.append(counts if counts is not None else kinds.new_full((tokens.shape[0],), tokens.shape[1]))
        marker = item >= 0
        if compiling:
            width = min(first, kinds.shape[1])
        else:
            width = int(marker.sum(1).max()) if marker.numel() else 0
        if width == 0:
            return None, None, None
        slot = torch.where(marker, marker.cumsum(1) - 1, 0)  # the item's place in its row
        table = kinds.new_full((kinds.shape[0], width), -1)
        positions = torch.arange(kinds.shape[1], device=kinds.device).expand_as(kinds)
        offsets = table.scatter_reduce(1, slot, torch.where(marker, positions, -1), "amax")
        chosen = table.scatter_reduce(1, slot, item, "amax").clamp(min=0)  # empty slots: item 0, masked out
        media = torch.cat(items)[chosen]  # (B, I, R, D)
        return media.flatten(1, 2), offsets, torch.cat(valid).to(chosen.device)[chosen]

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        lengths: torch.Tensor | None = None,
        return_hidden: bool = False,
        media_rows: Mapping[str, torch.Tensor] | None = None,
        **media: torch.Tensor | Mapping[str, torch.Tensor] | None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, vocab)`` (and the final hidden states with ``return_hidden``); ``media``: the
        keywords of :meth:`encode_media` (``media=``, ``media_lengths=``, ``frames=`` ...).

        ``media_rows``: ``{modality: (N,) int}`` the row of each item of that modality; a row's ``j``-th
        marker then reads the ``j``-th of its own items (items may come in any row order), instead of
        markers counted over all rows; needed to stream rows whose markers come in any order."""
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        chunk_valid = None
        if lengths is not None:  # valid tokens of this call (of this chunk when streaming)
            lengths = check_lengths(lengths, "lengths", batch=input_ids.shape[0], max_len=input_ids.shape[1])
            chunk_valid = lengths_to_mask(lengths.to(input_ids.device), input_ids.shape[1])
        latents, zero = self._encode(**media)
        rows = self._checked_rows(media_rows, latents, input_ids.shape[0])
        kinds, start, valid = self.markers(input_ids, chunk_valid, per_row=tuple(rows))
        media, offsets, counts = self._gather(latents, kinds, self.markers.streaming_state is None, rows)
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

    @staticmethod
    def _checked_rows(
        media_rows: Mapping[str, torch.Tensor] | None,
        latents: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
        batch: int,
    ) -> dict[str, torch.Tensor]:
        """``media_rows`` checked: a modality given, ``(N,)`` integer rows in ``[0, batch)`` (the range in
        eager mode only), as int64 on the items' device."""
        if media_rows is None:
            return {}
        if not isinstance(media_rows, Mapping):
            raise OmnikitTypeError(f"`media_rows` expected a mapping {{modality: Tensor}} but got "
                                   f"{type(media_rows).__name__}")
        rows = {}
        for modality, owner in media_rows.items():
            name = f"media_rows[{modality!r}]"
            if modality not in latents:
                raise OmnikitValueError(f"`{name}` given but no {modality} media")
            tokens = latents[modality][0]
            check_tensor(owner, name, shape=(tokens.shape[0],), floating=False)
            rows[modality] = check_ids(owner, name, batch, what="rows").to(tokens.device, torch.long)
        return rows

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
