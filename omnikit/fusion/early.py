"""Early fusion: media embeddings scattered into the token sequence at their placeholders.

A multimodal sequence is ordinary ``input_ids`` in which each encoder output token is stood for
by one placeholder token of its modality (see :class:`MediaTokens`). The builder

1. embeds the text, checks that every modality's placeholder count equals the number of valid
   tokens its encoder produced, and scatters them in (:func:`scatter_media`);
2. labels every token with its modality and media item (:func:`media_item_ids`);
3. builds the attention mask: causal for text, optionally bidirectional inside one media item,
   block-diagonal across samples packed into one row (:func:`fusion_attention_mask`);
4. packs several samples into one row (:func:`pack_sequences`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from omnikit.fusion.modality import MediaTokens
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_tensor

__all__ = [
    "PackedSequences", "fusion_attention_mask", "media_item_ids", "media_slots", "pack_sequences", "place_media",
    "placeholder_items", "scatter_media",
]

MediaInput = torch.Tensor | EncoderOutput


def _checked(value: MediaInput, modality: str) -> MediaInput:
    if not isinstance(value, (torch.Tensor, EncoderOutput)):
        raise OmnikitTypeError(
            f"`media[{modality!r}]` expected a Tensor (N, D) or an EncoderOutput but got {type(value).__name__}"
        )
    if isinstance(value, torch.Tensor):
        check_tensor(value, f"media[{modality!r}]", ndim=2, floating=True)
    return value


def placeholder_items(where: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The item each placeholder belongs to and its index inside the item, by tensor operations only.

    Args:
        where: ``(B, T)`` bool, True on the placeholders of one modality.
        sizes: ``(N,)`` int64 tokens per item (N >= 1), the items in row-major order over the batch.

    Returns:
        ``item (B, T)`` and ``index (B, T)`` int64; meaningless on False tokens, and on
        placeholders past the last item (``item`` is then ``N - 1``, ``index >= sizes[N - 1]``).
    """
    order = where.flatten().long().cumsum(0).view(where.shape) - 1
    ends = sizes.cumsum(0)
    item = torch.searchsorted(ends, order, right=True).clamp(max=sizes.shape[0] - 1)
    return item, order - (ends - sizes)[item]


def placed_tokens(value: EncoderOutput, where: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)``: at each placeholder of ``where``, its item's token from the padded ``(N, L, D)``
    encoder output (a gather: no host read of the lengths)."""
    hidden = value.hidden_states
    if hidden.shape[0] == 0:
        return hidden.new_zeros(*where.shape, hidden.shape[-1])
    item, index = placeholder_items(where, value.lengths.to(where.device).long())
    return hidden.flatten(0, 1)[item * hidden.shape[1] + index.clamp(0, hidden.shape[1] - 1)]


def scatter_media(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    media: Mapping[str, MediaInput],
    tokens: MediaTokens,
    *,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace placeholder embeddings by media embeddings.

    Args:
        embeds: ``(B, T, D)`` token embeddings of ``input_ids``.
        input_ids: ``(B, T)`` ids with one placeholder per media token.
        media: ``{modality: tokens}``, each ``(N, D)`` (all items' valid tokens, item after item,
            in the order their placeholders appear row by row) or an :class:`EncoderOutput`
            ``(items, T', D)`` with lengths (placed by a gather: the lengths are not read on the host).
        tokens: the placeholder id of each modality.
        key_padding_mask: ``(B, T)`` bool, False on padding: placeholders there are ignored.

    Returns:
        ``(B, T, D)`` embeddings with media tokens in place (differentiable in both inputs).

    Raises:
        ValueError: placeholder count != media token count (naming the modality and both
            counts), a modality with placeholders but no media, or a width mismatch.
    """
    check_tensor(embeds, "embeds", shape=("B", "T", "D"), floating=True)
    check_tensor(input_ids, "input_ids", shape=tuple(embeds.shape[:2]), floating=False)
    slots = media_slots(input_ids, media, tokens, width=embeds.shape[2], key_padding_mask=key_padding_mask)
    return place_media(embeds, media, slots)


def media_slots(
    input_ids: torch.Tensor,
    media: Mapping[str, MediaInput],
    tokens: MediaTokens,
    *,
    width: int,
    key_padding_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{modality: (B, T) bool}``: the placeholders of each modality of ``media`` (checked ``input_ids``
    ``(B, T)``; False on padding), after checking the media against them: types, widths (``width``, the text
    embedding's) and, eagerly, every modality's placeholder count against its token count, all counts in one
    host read. Raises as :func:`scatter_media`."""
    placeholders = tokens.as_dict()
    unknown = sorted(set(media) - set(placeholders))
    if unknown:
        raise OmnikitValueError(
            f"`media` has modalities {unknown} without a placeholder token; MediaTokens defines {sorted(placeholders)}"
        )
    valid = torch.ones_like(input_ids, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
    where = {modality: (input_ids == token) & valid for modality, token in placeholders.items()}
    values = {modality: _checked(media[modality], modality) for modality in placeholders if modality in media}
    counts = _read_counts(where, values) if where and not torch.compiler.is_compiling() else {}  # eager only
    for modality, (count, given_count) in counts.items():
        if modality not in values and count:
            raise OmnikitValueError(
                f"`input_ids` holds {count} {modality} placeholder tokens but `media` has no {modality!r} entry"
            )
        if modality in values and given_count != count:
            raise OmnikitValueError(
                f"{modality}: `input_ids` holds {count} {modality} placeholder tokens but the {modality} "
                f"encoder gave {given_count} tokens"
            )
    for modality, value in values.items():
        got = (value.hidden_states if isinstance(value, EncoderOutput) else value).shape[-1]
        if got != width:
            raise OmnikitValueError(
                f"`media[{modality!r}]` expected width {width} (the text embedding) but got {got}"
            )
    return {modality: where[modality] for modality in values}


def _read_counts(where: Mapping[str, torch.Tensor], values: Mapping[str, MediaInput]) -> dict[str, tuple[int, int]]:
    """``{modality: (placeholders, media tokens)}`` for every modality of ``where``, in one host read."""
    padded = [m for m, v in values.items() if isinstance(v, EncoderOutput)]
    device = next(iter(where.values())).device
    sums = [*(mask.sum() for mask in where.values()), *(values[m].lengths.sum().to(device, torch.long) for m in padded)]
    read = torch.stack(sums).tolist()
    given = {m: v.shape[0] for m, v in values.items() if m not in padded} | dict(zip(padded, read[len(where):]))
    return {modality: (count, given.get(modality, 0)) for modality, count in zip(where, read)}


def place_media(
    embeds: torch.Tensor, media: Mapping[str, MediaInput], slots: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``embeds (B, T, D)`` with each modality's tokens of ``media`` at its ``slots`` (from :func:`media_slots`:
    trusted, nothing is checked)."""
    for modality, where in slots.items():
        value = media[modality]
        if isinstance(value, EncoderOutput):
            embeds = torch.where(where[..., None], placed_tokens(value, where).to(embeds.dtype), embeds)
        else:
            embeds = embeds.masked_scatter(where[..., None], value.to(embeds.dtype))
    return embeds


def media_item_ids(modality_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` modality codes -> ``(B, T)`` int64 item ids: each run of media tokens is one item
    (numbered from 0 per row), text tokens get -1."""
    check_tensor(modality_ids, "modality_ids", ndim=2, floating=False)
    is_media = modality_ids != 0
    starts = is_media & ~torch.cat((torch.zeros_like(is_media[:, :1]), is_media[:, :-1]), dim=1)
    ids = starts.long().cumsum(1) - 1
    return torch.where(is_media, ids, torch.full_like(ids, -1))


def fusion_attention_mask(
    modality_ids: torch.Tensor,
    *,
    bidirectional_media: bool = True,
    segment_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``(B, 1, T, T)`` bool mask (True: may attend) of a multimodal sequence.

    Causal everywhere; with ``bidirectional_media`` the tokens of one media item (a run of media
    placeholders) also see each other; ``segment_ids (B, T)`` keeps packed samples apart
    (block-diagonal); ``key_padding_mask (B, T)`` hides padding. Rows never end up empty: a
    token always sees itself.
    """
    check_tensor(modality_ids, "modality_ids", ndim=2, floating=False)
    length = modality_ids.shape[1]
    pos = torch.arange(length, device=modality_ids.device)
    mask = (pos[None, :] <= pos[:, None])[None].expand(modality_ids.shape[0], -1, -1)
    if bidirectional_media:
        items = media_item_ids(modality_ids)
        if segment_ids is not None:  # an item never spans two samples
            items = torch.where(items >= 0, items + segment_ids * length, items)
        mask = mask | ((items[:, :, None] == items[:, None, :]) & (items[:, :, None] >= 0))
    if segment_ids is not None:
        check_tensor(segment_ids, "segment_ids", shape=tuple(modality_ids.shape), floating=False)
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    if key_padding_mask is not None:
        check_tensor(key_padding_mask, "key_padding_mask", shape=tuple(modality_ids.shape), dtype=torch.bool)
        mask = mask & key_padding_mask[:, None, :]
        mask = mask | torch.eye(length, dtype=torch.bool, device=mask.device)[None]
    return mask[:, None]


@dataclass
class PackedSequences:
    """Samples concatenated into one row.

    Attributes:
        input_ids: ``(1, L)`` all samples back to back.
        positions: ``(3, 1, L)`` (or ``(1, L)``) each sample's own position ids.
        cu_seqlens: ``(N + 1,)`` int64 sample boundaries (for ``cu_seqlens`` attention).
        segment_ids: ``(1, L)`` int64 sample index of every token.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    cu_seqlens: torch.Tensor
    segment_ids: torch.Tensor


def pack_sequences(
    input_ids: Sequence[torch.Tensor], positions: Sequence[torch.Tensor] | None = None
) -> PackedSequences:
    """Pack samples ``(T_i,)`` (with optional positions ``(3, T_i)`` or ``(T_i,)``) into one row.

    Positions restart in every sample, so a packed sample sees exactly what it would see alone
    when the mask is block-diagonal (``cu_seqlens`` or ``segment_ids``).
    """
    if not input_ids:
        raise OmnikitValueError("`input_ids` expected at least one sample to pack but got none")
    for i, ids in enumerate(input_ids):
        check_tensor(ids, f"input_ids[{i}]", ndim=1, floating=False)
    sizes = torch.tensor([len(ids) for ids in input_ids])
    if positions is None:
        positions = [torch.arange(n) for n in sizes.tolist()]
    if len(positions) != len(input_ids):
        raise OmnikitValueError(f"`positions` expected {len(input_ids)} entries but got {len(positions)}")
    for i, (ids, pos) in enumerate(zip(input_ids, positions)):
        if pos.shape[-1] != len(ids):
            raise OmnikitValueError(f"`positions[{i}]` expected {len(ids)} positions but got {pos.shape[-1]}")
    cu = torch.cat((torch.zeros(1, dtype=torch.long), sizes.cumsum(0)))
    return PackedSequences(
        input_ids=torch.cat(list(input_ids))[None],
        positions=torch.cat(list(positions), dim=-1).unsqueeze(-2),
        cu_seqlens=cu,
        segment_ids=torch.repeat_interleave(torch.arange(len(sizes)), sizes)[None],
    )
