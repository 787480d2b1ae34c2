"""The tensor-only TMRoPE builder against the host item walk (itself checked against transformers in
test_tmrope.py) on random layouts, its layout check, and fullgraph tracing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import omnikit
from omnikit.fusion import QWEN2_5_OMNI, QWEN3_OMNI, MediaTokens, VisualGrid, tmrope_position_ids
from omnikit.fusion.early import placeholder_items
from omnikit.fusion.tmrope import _walk_position_ids
from omnikit.fusion.tmrope_traced import ItemTable, traced_position_ids

TOKENS = MediaTokens(image=1, video=2, audio=3)
TEXT = 9

grids = st.builds(VisualGrid, st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
                  st.sampled_from([0.5, 1.0, 1.3, 2.7, 0.35]))
segments = st.one_of(
    st.tuples(st.just("text"), st.integers(1, 4)),
    st.tuples(st.just("image"), grids.map(lambda g: VisualGrid(g.t, g.h, g.w))),
    st.tuples(st.just("video"), grids),
    st.tuples(st.just("audio"), st.integers(1, 40)),
)


@st.composite
def layouts(draw):
    """A batch of rows of text and media items, padded left, right or not at all."""
    rows, items = [], {"images": [], "videos": [], "audios": []}
    for _ in range(draw(st.integers(1, 3))):
        row = []
        for kind, item in draw(st.lists(segments, max_size=5)):
            if kind == "text":
                row += [TEXT] * item
                continue
            items[kind + "s"].append(item)
            row += [getattr(TOKENS, kind)] * (item if kind == "audio" else item.num_tokens)
        rows.append(row)
    length = max(len(r) for r in rows)
    side = draw(st.sampled_from(["left", "right"]))
    ids = torch.full((len(rows), length), TEXT)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = torch.tensor(row, dtype=torch.long), True
    ids[~mask] = draw(st.sampled_from([TEXT, TOKENS.audio]))  # placeholders on padding are ignored
    return ids, mask, items


def _traced(ids, mask, items, scheme):
    tables = {1: ItemTable.visual(items["images"]), 2: ItemTable.visual(items["videos"]),
              3: ItemTable.audio(items["audios"])}
    return traced_position_ids(TOKENS.modality_ids(ids), mask, tables, scheme, check=True)


@settings(max_examples=150, deadline=None)
@given(layouts(), st.sampled_from([QWEN2_5_OMNI, QWEN3_OMNI]))
def test_traced_ids_equal_the_host_walk(layout, scheme) -> None:
    ids, mask, items = layout
    walked, walked_next = _walk_position_ids(TOKENS.modality_ids(ids), items["images"], items["videos"],
                                             items["audios"], scheme, mask)
    positions, next_position, ok = _traced(ids, mask, items, scheme)
    assert bool(ok)
    assert positions.dtype == walked.dtype == scheme.dtype
    if scheme.fractional:  # a running sum instead of the walk's per-item offsets: float32 rounding apart
        torch.testing.assert_close(positions, walked, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(next_position, walked_next, rtol=1e-6, atol=1e-5)
    else:
        assert torch.equal(positions, walked) and torch.equal(next_position, walked_next)


@settings(max_examples=150, deadline=None)
@given(layouts(), st.data())
def test_the_layout_check_agrees_with_the_host_walk_on_changed_layouts(layout, data) -> None:
    """A placeholder changed into another token, or two valid tokens of a row swapped: the check
    passes exactly when the host walk accepts the layout, and the public entry raises when it fails."""
    ids, mask, items = layout
    ids = ids.clone()
    spots = mask.nonzero().tolist()
    if not spots:
        return
    first = tuple(data.draw(st.sampled_from(spots)))
    if data.draw(st.booleans()):
        ids[first] = data.draw(st.sampled_from([TEXT, 1, 2, 3]))
    else:
        second = tuple(data.draw(st.sampled_from([s for s in spots if s[0] == first[0]])))
        ids[first], ids[second] = ids[second].clone(), ids[first].clone()
    try:
        _walk_position_ids(TOKENS.modality_ids(ids), items["images"], items["videos"], items["audios"], QWEN2_5_OMNI,
                           mask)
        walk_accepts = True
    except ValueError:
        walk_accepts = False
    assert bool(_traced(ids, mask, items, QWEN2_5_OMNI)[2]) == walk_accepts
    if not walk_accepts:
        with pytest.raises(ValueError, match=r"input_ids|items"):
            tmrope_position_ids(ids, TOKENS, **items, key_padding_mask=mask)


def test_placeholder_items_numbers_tokens_row_major_across_the_batch() -> None:
    where = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    item, index = placeholder_items(where, torch.tensor([2, 3]))
    assert item[where].tolist() == [0, 0, 1, 1, 1] and index[where].tolist() == [0, 1, 0, 1, 2]


def test_fullgraph_compile_with_audio_counts_as_a_tensor_equals_eager() -> None:
    ids = torch.tensor([[TEXT, *[2] * 8, TEXT, *[3] * 5, TEXT], [*[3] * 4, TEXT, TEXT, TEXT, *[TEXT] * 9]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 7:] = False

    def build(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tmrope_position_ids(ids, TOKENS, videos=[VisualGrid(2, 2, 2, 1.3)], audios=counts,
                                   scheme=QWEN3_OMNI, key_padding_mask=mask)

    torch._dynamo.reset()
    compiled = torch.compile(build, fullgraph=True, backend="eager")
    counts = torch.tensor([5, 4])
    for got, want in zip(compiled(counts), build(counts)):
        torch.testing.assert_close(got, want)


def test_audio_in_video_while_compiling_says_to_pass_positions() -> None:
    ids = torch.tensor([[TEXT, *[2] * 4, *[3] * 2, TEXT]])

    def build(ids: torch.Tensor) -> torch.Tensor:
        return tmrope_position_ids(ids, TOKENS, videos=[VisualGrid(1, 2, 2, audio_tokens=2)])[0]

    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"audio in video.*pass `positions=`"):
        torch.compile(build, fullgraph=True, backend="eager")(ids)


@pytest.mark.slow
def test_early_fusion_compiles_once_across_sequence_lengths() -> None:
    """``dynamic=True``: TMRoPE, the audio adapter's padded tokens and the gather scatter trace with a
    symbolic length, so other lengths (same batch size) reuse the graph and equal eager."""
    torch.manual_seed(0)
    model = omnikit.create_model("omni_early_tiny").eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        compiled(**model.contract_inputs([13, 9]).kwargs)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for lengths in ([11, 6], [20, 15]):
                inputs = model.contract_inputs(lengths, seed=3).kwargs
                torch.testing.assert_close(compiled(**inputs), model(**inputs), atol=1e-4, rtol=1e-3)
