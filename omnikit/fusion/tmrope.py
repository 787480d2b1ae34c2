"""TMRoPE: time-aligned multimodal rotary position ids ``(t, h, w)`` for a mixed token sequence.

Every token gets three position ids. Text tokens advance all three together (plain 1-D RoPE).
A visual item (image or video) of ``t x h x w`` merged tokens gets temporal ids from its
timestamps (``seconds * ids_per_second``) and height/width ids from its grid; an audio item gets
one temporal id step per token. All ids of an item are offset by the id that follows the
preceding token, and the token after an item continues from the largest id of the item's last
token. A video with its own audio track ("audio in video") interleaves the two streams by time,
either in chunks of ``seconds_per_chunk`` (Qwen2.5-Omni: all video tokens of a chunk, then its
audio tokens) or token by token in time order (Qwen3-Omni).

The two published schemes are :data:`QWEN2_5_OMNI` (25 ids/s, 2 s chunks, integer ids, contiguous
rotary sections 16/24/24) and :data:`QWEN3_OMNI` (13 ids/s, token-by-token interleave, fractional
ids, interleaved sections 24/20/20). For the Qwen2.5-Omni scheme the ids equal transformers'
``Qwen2_5OmniThinkerForConditionalGeneration.get_rope_index`` on the same sequence.

Usage::

    tokens = MediaTokens(image=151655, video=151656, audio=151646)
    pos, next_pos = tmrope_position_ids(input_ids, tokens, images=[VisualGrid(1, 4, 6)], audios=[50])
    cos, sin = RotaryEmbedding(128, sections=QWEN2_5_OMNI.sections)(pos)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, zip_longest

import torch

from omnikit.fusion.modality import MODALITIES, MediaTokens
from omnikit.fusion.tmrope_traced import ItemTable, traced_position_ids
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive_number, check_tensor

__all__ = [
    "QWEN2_5_OMNI", "QWEN3_OMNI", "TMRoPEScheme", "VisualGrid", "checked_position_ids", "item_positions",
    "tmrope_position_ids",
]

_IMAGE, _VIDEO, _AUDIO = (MODALITIES.index(m) for m in ("image", "video", "audio"))


@dataclass(frozen=True)
class TMRoPEScheme:
    """How time maps to temporal position ids, and how audio-in-video is interleaved.

    Attributes:
        ids_per_second: temporal ids per second of media time (25: one id = 40 ms).
        seconds_per_chunk: audio-in-video chunk length; ``None`` interleaves token by token in
            time order (video first on ties).
        fractional: keep fractional temporal ids (float32 positions) instead of truncating them.
        audio_ids_per_token: temporal id step between consecutive audio tokens.
        shared_av_markers: the two start markers before an audio-in-video item (vision, audio)
            share one id, as do the two end markers after it (Qwen2.5-Omni).
        sections: rotary frequencies per axis ``(t, h, w)``; sum = head_dim / 2.
        interleaved: rotary frequency split, contiguous (False) or interleaved (True).
    """

    ids_per_second: float = 25.0
    seconds_per_chunk: float | None = 2.0
    fractional: bool = False
    audio_ids_per_token: float = 1.0
    shared_av_markers: bool = True
    sections: tuple[int, int, int] = (16, 24, 24)
    interleaved: bool = False

    def __post_init__(self) -> None:
        for name in ("ids_per_second", "audio_ids_per_token"):
            check_positive_number(getattr(self, name), f"TMRoPEScheme.{name}")
        if self.seconds_per_chunk is not None:
            seconds = check_positive_number(self.seconds_per_chunk, "TMRoPEScheme.seconds_per_chunk")
            if int(self.ids_per_second * seconds) < 1:
                raise OmnikitValueError(
                    f"`TMRoPEScheme.seconds_per_chunk` expected at least one temporal id per chunk "
                    f"(ids_per_second * seconds_per_chunk >= 1) but got {seconds} s at {self.ids_per_second} ids/s"
                )

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the position ids this scheme produces."""
        return torch.float32 if self.fractional else torch.long

    def visual_time_ids(self, steps: int, seconds_per_step: float) -> torch.Tensor:
        """Temporal ids of ``steps`` visual steps (float32 arithmetic, truncated unless fractional)."""
        t = torch.arange(steps) * torch.tensor(seconds_per_step, dtype=torch.float32) * float(self.ids_per_second)
        return t if self.fractional else t.long()

    def audio_time_ids(self, tokens: int) -> torch.Tensor:
        t = torch.arange(tokens, dtype=torch.float32) * float(self.audio_ids_per_token)
        return t if self.fractional else t.long()


#: Qwen2.5-Omni: 25 ids/s, audio and video interleaved in 2 s chunks, M-RoPE sections 16/24/24.
QWEN2_5_OMNI = TMRoPEScheme()
#: Qwen3-Omni: 13 ids/s, token-by-token time interleave, fractional ids, interleaved 24/20/20.
QWEN3_OMNI = TMRoPEScheme(
    ids_per_second=13.0, seconds_per_chunk=None, fractional=True, shared_av_markers=False,
    sections=(24, 20, 20), interleaved=True,
)


@dataclass(frozen=True)
class VisualGrid:
    """The merged token grid of one image or video.

    Attributes:
        t, h, w: temporal steps and tokens per step along height and width (after any merger).
        seconds_per_step: media time between temporal steps (a video's ``second_per_grid``;
            images keep the default).
        audio_tokens: tokens of the video's own audio track interleaved with it (0: none).
    """

    t: int
    h: int
    w: int
    seconds_per_step: float = 1.0
    audio_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("t", "h", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OmnikitValueError(f"`VisualGrid.{name}` expected an int >= 1 but got {value!r}")
        if not isinstance(self.audio_tokens, int) or self.audio_tokens < 0:
            raise OmnikitValueError(f"`VisualGrid.audio_tokens` expected an int >= 0 but got {self.audio_tokens!r}")
        seconds = self.seconds_per_step
        if torch.compiler.is_compiling():  # traced grids come from checked inputs (a symbolic float here)
            return
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) \
                or seconds < 0:
            raise OmnikitValueError(f"`VisualGrid.seconds_per_step` expected a finite number >= 0 but got {seconds!r}")

    @classmethod
    def from_patch_grid(
        cls, grid_thw: Sequence[int] | torch.Tensor, spatial_merge: int = 2, seconds_per_step: float = 1.0,
        audio_tokens: int = 0,
    ) -> VisualGrid:
        """From a ViT patch grid ``(t, h, w)`` before a ``spatial_merge x spatial_merge`` merger."""
        t, h, w = (int(v) for v in grid_thw)
        if h % spatial_merge or w % spatial_merge:
            raise OmnikitValueError(f"`grid_thw` {(t, h, w)} is not divisible by spatial_merge={spatial_merge}")
        return cls(t, h // spatial_merge, w // spatial_merge, float(seconds_per_step), int(audio_tokens))

    @property
    def visual_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def num_tokens(self) -> int:
        return self.visual_tokens + self.audio_tokens


#: The items of one modality: visual grids, audio token counts (a sequence or a tensor), or an ItemTable.
Items = Sequence[VisualGrid] | Sequence[int] | torch.Tensor | ItemTable


def _chunk_bounds(time_ids: torch.Tensor, size: float) -> list[int]:
    """Split non-decreasing temporal ids into consecutive chunks of ``size`` ids.

    A chunk ends before the first id that reaches the next threshold; the threshold then moves on
    by one chunk (so a gap longer than a chunk delays later boundaries, as in the reference).
    """
    bounds, threshold = [0], size
    for i, value in enumerate(time_ids.tolist()):
        if value >= threshold:
            bounds.append(i)
            threshold += size
    return [*bounds, len(time_ids)]


@functools.lru_cache(maxsize=1024)
def item_positions(item: VisualGrid | int, modality: str, scheme: TMRoPEScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Local ``(3, n)`` position ids (starting at 0) and modality codes ``(n,)`` of one media item.

    ``item`` is a :class:`VisualGrid` for ``"image"``/``"video"`` or an audio token count for
    ``"audio"``. The codes give the order in which the item's placeholder tokens appear. Results
    are cached (treat them as read-only).
    """
    if modality == "audio":
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise OmnikitValueError(f"an audio item expected an int token count >= 0 but got {item!r}")
        t = scheme.audio_time_ids(item)
        return t.expand(3, -1), torch.full((int(item),), _AUDIO)
    if not isinstance(item, VisualGrid):
        raise OmnikitTypeError(f"a {modality} item expected a VisualGrid but got {type(item).__name__}")
    t = scheme.visual_time_ids(item.t, item.seconds_per_step)
    hw = (torch.arange(item.h, dtype=t.dtype), torch.arange(item.w, dtype=t.dtype))
    grid = torch.stack(torch.meshgrid(t, *hw, indexing="ij")).flatten(1)
    code = _IMAGE if modality == "image" else _VIDEO
    if not item.audio_tokens:
        return grid, torch.full((grid.shape[1],), code)
    audio = scheme.audio_time_ids(item.audio_tokens).expand(3, -1)
    kinds = torch.cat((torch.full((grid.shape[1],), code), torch.full((item.audio_tokens,), _AUDIO)))
    both = torch.cat((grid, audio), dim=1)
    order = _interleave_order(grid[0], audio[0], scheme)
    return both[:, order], kinds[order]


def _interleave_order(video_t: torch.Tensor, audio_t: torch.Tensor, scheme: TMRoPEScheme) -> torch.Tensor:
    """Indices into ``cat(video, audio)`` giving the interleaved token order."""
    n_video = len(video_t)
    if scheme.seconds_per_chunk is None:  # token by token in time order, video first on ties
        order, i, j = [], 0, 0
        while i < n_video and j < len(audio_t):
            if video_t[i] <= audio_t[j]:
                order.append(i)
                i += 1
            else:
                order.append(n_video + j)
                j += 1
        order += list(range(i, n_video)) + [n_video + k for k in range(j, len(audio_t))]
        return torch.tensor(order)
    size = int(scheme.ids_per_second * scheme.seconds_per_chunk)
    vb, ab = _chunk_bounds(video_t, size), _chunk_bounds(audio_t, size)
    pieces = []
    for v, a in zip_longest(pairwise(vb), pairwise(ab)):
        if v is not None:
            pieces.append(torch.arange(*v))
        if a is not None:
            pieces.append(torch.arange(*a) + n_video)
    return torch.cat(pieces)


def _text_positions(n: int, start: torch.Tensor, shared_before: bool, shared_after: bool, dtype) -> torch.Tensor:
    """Sequential ids for ``n`` text tokens; a shared marker pair at either end repeats one id."""
    steps = torch.ones(n, dtype=dtype)
    steps[0] = 0
    if shared_after and n > 1:
        steps[1] = 0  # the first two tokens (end markers of the item before) share an id
    if shared_before and n > 1:
        steps[-1] = 0  # the last two tokens (start markers of the item after) share an id
    return (start + steps.cumsum(0)).expand(3, -1)


def _sample_positions(
    kinds: torch.Tensor, queues: dict[int, list], used: dict[int, int], scheme: TMRoPEScheme, sample: int
) -> torch.Tensor:
    n = len(kinds)
    codes = kinds.tolist()
    # segments: ("text", length) or (modality code, item), in sequence order
    segments: list[tuple[object, object]] = []
    i = 0
    while i < n:
        code = codes[i]
        if code == 0:
            j = i
            while j < n and codes[j] == 0:
                j += 1
            segments.append(("text", j - i))
            i = j
            continue
        name = MODALITIES[code]
        if used[code] >= len(queues[code]):
            raise OmnikitValueError(
                f"`input_ids` item {sample} has more {name} items than given: {len(queues[code])} {name} "
                f"item(s) were passed"
            )
        item = queues[code][used[code]]
        local, local_kinds = item_positions(item, name, scheme)
        found = kinds[i : i + len(local_kinds)]
        if not torch.equal(found, local_kinds):
            have = next((j for j in range(i, n) if codes[j] == 0), n) - i
            raise OmnikitValueError(
                f"`input_ids` item {sample}: {name} item #{used[code]} ({item}) expects {len(local_kinds)} "
                f"placeholder tokens at token {i}, but the sequence has a run of {have} placeholder tokens there"
                + (" in a different order (audio-in-video interleave)" if have == len(local_kinds) else "")
            )
        used[code] += 1
        segments.append((code, (item, local)))
        i += len(local_kinds)

    def is_av(k: int) -> bool:
        return 0 <= k < len(segments) and segments[k][0] != "text" and getattr(segments[k][1][0], "audio_tokens", 0)

    out: list[torch.Tensor] = []
    start = torch.zeros((), dtype=scheme.dtype)
    for k, (kind, payload) in enumerate(segments):
        shared_before = scheme.shared_av_markers and bool(is_av(k + 1))
        shared_after = scheme.shared_av_markers and bool(is_av(k - 1))
        if kind == "text":
            if (shared_before or shared_after) and payload < 2 + 2 * (shared_before and shared_after):
                raise OmnikitValueError(
                    f"`input_ids` item {sample}: an audio-in-video item needs two start and two end marker "
                    f"tokens around it under this scheme (shared_av_markers=True)"
                )
            ids = _text_positions(payload, start, shared_before, shared_after, scheme.dtype)
        else:
            if shared_before or shared_after:
                raise OmnikitValueError(
                    f"`input_ids` item {sample}: an audio-in-video item must be separated from other media by "
                    "its start/end marker tokens (shared_av_markers=True)"
                )
            ids = payload[1] + start
        out.append(ids)
        start = ids[:, -1].max() + 1
    return torch.cat(out, dim=1) if out else torch.zeros(3, 0, dtype=scheme.dtype)


def tmrope_position_ids(
    input_ids: torch.Tensor,
    media_tokens: MediaTokens,
    *,
    images: Sequence[VisualGrid] | ItemTable = (),
    videos: Sequence[VisualGrid] | ItemTable = (),
    audios: Sequence[int] | torch.Tensor | ItemTable = (),
    scheme: TMRoPEScheme = QWEN2_5_OMNI,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TMRoPE ids of a batch of token sequences with media placeholders.

    Args:
        input_ids: ``(B, T)`` or ``(T,)`` token ids; each media item occupies a run of its
            placeholder tokens (an audio-in-video item: video and audio placeholders interleaved
            as :func:`item_positions` orders them).
        media_tokens: the placeholder id of each modality.
        images, videos, audios: the items in the order they appear, across the whole batch
            (item 0 first). Audio items are token counts (a tensor of counts is never read on the
            host); any of the three may be an :class:`~omnikit.fusion.tmrope_traced.ItemTable`.
        scheme: :data:`QWEN2_5_OMNI`, :data:`QWEN3_OMNI` or your own :class:`TMRoPEScheme`.
        key_padding_mask: ``(B, T)`` bool, False on padding (left or right); padding gets id 0.

    Returns:
        ``positions (3, B, T)`` (int64, float32 when ``scheme.fractional``) and ``next_position
        (B,)``: the id that continues each sequence (for generation).

    Raises:
        ValueError: a placeholder run that does not match the next item of its modality, or a
            count of items that differs from the placeholders in the sequence (eager mode; traced,
            the layout is not checked). Audio-in-video items while compiling (their interleaved
            layout is walked on the host: compute the positions eagerly and pass them on).

    The ids come from tensor operations only (:func:`~omnikit.fusion.tmrope_traced.traced_position_ids`),
    so this traces without graph breaks; audio-in-video items take the host walk of this module.
    """
    check_tensor(input_ids, "input_ids", ndim=(1, 2), floating=False)
    batched = input_ids if input_ids.ndim == 2 else input_ids[None]
    if key_padding_mask is not None:
        check_tensor(key_padding_mask, "key_padding_mask", shape=tuple(batched.shape), dtype=torch.bool)
    items = {"images": images, "videos": videos, "audios": audios}
    positions, next_position = checked_position_ids(media_tokens.codes(batched), items, scheme, key_padding_mask)
    return (positions if input_ids.ndim == 2 else positions[:, 0]), next_position


def checked_position_ids(
    modality_ids: torch.Tensor, items: Mapping[str, Items], scheme: TMRoPEScheme,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`tmrope_position_ids` of a ``(B, T)`` batch given by the modality codes of its checked ``input_ids``
    (:attr:`~omnikit.fusion.boundary.CheckedPrompt.modality_ids`; ``key_padding_mask`` ``(B, T)`` bool, checked);
    ``items``: ``{"images": ..., "videos": ..., "audios": ...}`` (each optional) as :func:`tmrope_position_ids` takes
    them. The media items are still matched against the placeholders."""
    images, videos, audios = (items.get(kind, ()) for kind in ("images", "videos", "audios"))
    tracing = torch.compiler.is_compiling()
    if not isinstance(videos, ItemTable) and any(g.audio_tokens for g in videos):
        if tracing:
            raise OmnikitValueError(
                "`videos` with audio_tokens (audio in video) cannot be traced: their interleaved TMRoPE ids are "
                "walked on the host; compute them eagerly with `tmrope_position_ids` and pass `positions=`"
            )
        return _walk_position_ids(modality_ids, images, videos, audios, scheme, key_padding_mask)
    device = modality_ids.device
    tables = {_IMAGE: _table(images, device), _VIDEO: _table(videos, device),
              _AUDIO: audios if isinstance(audios, ItemTable) else ItemTable.audio(audios, device)}
    valid = torch.ones_like(modality_ids, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
    positions, next_position, ok = traced_position_ids(modality_ids, valid, tables, scheme, check=not tracing)
    if ok is not None and not bool(ok):  # the walk names the item that does not fit
        _walk_position_ids(modality_ids, images, videos, audios, scheme, key_padding_mask)
        raise OmnikitValueError("`input_ids` placeholders do not match the media items given")
    return positions, next_position


def _table(items: Sequence[VisualGrid] | ItemTable, device: torch.device) -> ItemTable:
    return items if isinstance(items, ItemTable) else ItemTable.visual(items, device)


def _visual_list(items: Sequence[VisualGrid] | ItemTable) -> list[VisualGrid]:
    if not isinstance(items, ItemTable):
        return list(items)
    rows = zip(items.grid.tolist(), items.seconds_per_step.tolist())
    return [VisualGrid(*grid, seconds_per_step=seconds) for grid, seconds in rows]


def _walk_position_ids(
    modality_ids: torch.Tensor,
    images: Sequence[VisualGrid] | ItemTable,
    videos: Sequence[VisualGrid] | ItemTable,
    audios: Sequence[int] | torch.Tensor | ItemTable,
    scheme: TMRoPEScheme,
    key_padding_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`checked_position_ids` of a ``(B, T)`` batch, item by item on the host (eager only)."""
    counts = audios.sizes if isinstance(audios, ItemTable) else audios
    kinds = modality_ids.cpu()
    queues = {_IMAGE: _visual_list(images), _VIDEO: _visual_list(videos), _AUDIO: [int(n) for n in counts]}
    used = dict.fromkeys(queues, 0)
    positions = torch.zeros(3, *modality_ids.shape, dtype=scheme.dtype)
    next_position = torch.zeros(modality_ids.shape[0], dtype=scheme.dtype)
    for b in range(modality_ids.shape[0]):
        valid = slice(None) if key_padding_mask is None else key_padding_mask[b].cpu()
        ids = _sample_positions(kinds[b][valid], queues, used, scheme, b)
        positions[:, b, valid] = ids
        next_position[b] = ids.max() + 1 if ids.numel() else 0
    for code, items in queues.items():
        if used[code] != len(items):
            name = MODALITIES[code]
            raise OmnikitValueError(
                f"`{name}s`: {len(items)} {name} item(s) were given but `input_ids` holds placeholders for "
                f"{used[code]}"
            )
    return positions.to(modality_ids.device), next_position.to(modality_ids.device)
