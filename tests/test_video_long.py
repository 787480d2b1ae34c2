"""Long video: ToMe token merging, hierarchical summarisation, the bounded memory bank."""

from __future__ import annotations

import pytest
import torch

from omnikit.video import HierarchicalSummarizer, HierarchyConfig, MemoryBank, merge_tokens, pack_groups


@pytest.mark.parametrize("matching", ["bipartite", "mutual"])
def test_merge_reaches_target_with_size_weighted_means(matching: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 37, 8)
    sizes = torch.rand(2, 37) + 0.5
    result = merge_tokens(x, 5, sizes=sizes, matching=matching)
    assert result.tokens.shape == (2, 5, 8) and result.lengths.tolist() == [5, 5]
    torch.testing.assert_close(result.sizes.sum(1), sizes.sum(1))
    for b in range(2):
        for slot in range(5):
            members = result.assignment[b] == slot
            w = sizes[b, members]
            expected = (x[b, members] * w[:, None]).sum(0) / w.sum()
            torch.testing.assert_close(result.tokens[b, slot], expected, atol=1e-5, rtol=1e-5)


def test_merge_collapses_duplicates_first() -> None:
    torch.manual_seed(0)
    prototypes = torch.randn(4, 16)
    order = torch.randint(0, 4, (40,))
    order[:4] = torch.arange(4)  # every prototype present
    x = prototypes[order][None]
    result = merge_tokens(x, 4, matching="mutual")
    found = result.tokens[0]
    distance = torch.cdist(found, prototypes)
    assert distance.min(dim=1).values.max() < 1e-5  # every output is exactly one prototype
    assert torch.equal(result.sizes[0].sort().values, torch.bincount(order).float().sort().values)


@pytest.mark.parametrize("matching", ["bipartite", "mutual"])
def test_merge_batch_equals_items_and_short_items_pass_through(matching: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 30, 8)
    lengths = torch.tensor([30, 17, 4])
    batch = merge_tokens(x, 6, lengths=lengths, matching=matching)
    assert batch.lengths.tolist() == [6, 6, 4]
    assert (batch.assignment[1, 17:] == -1).all()
    for b, n in enumerate(lengths.tolist()):
        alone = merge_tokens(x[b : b + 1, :n], 6, matching=matching)
        torch.testing.assert_close(batch.tokens[b, : int(alone.lengths[0])], alone.tokens[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch.tokens[2, :4], x[2, :4])  # nothing to merge


@pytest.mark.parametrize("matching", ["bipartite", "mutual"])
def test_window_keeps_merges_local_and_ordered(matching: str) -> None:
    x = torch.randn(1, 64, 8)
    result = merge_tokens(x, 10, window=1, matching=matching)
    assignment = result.assignment[0]
    assert (assignment[1:] >= assignment[:-1]).all()  # every output is a contiguous run of inputs
    assert assignment.unique().numel() == 10


@pytest.mark.parametrize("length, target, window", [(37, 5, None), (16, 13, None), (64, 3, 1), (9, 8, 2)])
def test_bipartite_schedule_from_the_shapes_equals_the_rounds_read_from_the_counts(length, target, window) -> None:
    """Without ``lengths`` the rounds follow from ``N`` and ``target`` (one to six rounds here); passing full
    ``lengths`` takes the loop that reads the counts: both merge the same tokens into the same slots."""
    torch.manual_seed(0)
    x, sizes = torch.randn(3, length, 8), torch.rand(3, length) + 0.5
    fixed = merge_tokens(x, target, sizes=sizes, window=window)
    read = merge_tokens(x, target, sizes=sizes, window=window, lengths=torch.full((3,), length))
    assert fixed.lengths.tolist() == [target] * 3 and fixed.tokens.shape == (3, target, 8)
    assert torch.equal(fixed.assignment, read.assignment) and torch.equal(fixed.tokens, read.tokens)
    torch.testing.assert_close(fixed.sizes.sum(1), sizes.sum(1))


def test_bipartite_merge_compiles_without_graph_breaks() -> None:
    x = torch.randn(2, 20, 8)
    compiled = torch.compile(lambda t: merge_tokens(t, 4).tokens, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), merge_tokens(x, 4).tokens)


def test_merge_errors() -> None:
    with pytest.raises(ValueError, match="`metric` expected finite values"):
        merge_tokens(torch.tensor([[[1.0], [float("nan")], [2.0]]]), 2)
    with pytest.raises(ValueError, match="`target` expected an int > 0"):
        merge_tokens(torch.randn(1, 4, 2), 0)
    with pytest.raises(ValueError, match="`lengths` expected values in"):
        merge_tokens(torch.randn(1, 4, 2), 2, lengths=torch.tensor([5]))
    with pytest.raises(ValueError, match="`matching`"):
        merge_tokens(torch.randn(1, 4, 2), 2, matching="greedy")
    with pytest.raises(ValueError, match="`tokens` expected a 3-D tensor"):
        merge_tokens(torch.randn(4, 2), 2)


def test_pack_groups_removes_gaps_in_order() -> None:
    x = torch.arange(12.0).view(1, 3, 4)
    packed, totals = pack_groups(x, torch.tensor([[2, 0, 3]]))
    assert packed[0].tolist() == [0, 1, 8, 9, 10] and totals.tolist() == [5]


def test_hierarchy_levels_and_batch_equals_items() -> None:
    torch.manual_seed(0)
    config = HierarchyConfig(dim=8, clip_frames=4, clip_tokens=5, segment_clips=2, segment_tokens=6)
    model = HierarchicalSummarizer(config)
    tokens = torch.randn(2, 13, 3, 8)
    out = model(tokens, torch.tensor([13, 5]))
    # item 0: clips of 4,4,4,1 frames (12,12,12,3 tokens) -> 5,5,5,3 tokens; segments of 10 and 8 -> 6, 6
    assert out.clips.lengths.tolist() == [18, 8] and out.lengths.tolist() == [12, 6]
    for b, n in enumerate([13, 5]):
        alone = model(tokens[b : b + 1, :n])
        torch.testing.assert_close(out.hidden_states[b, : int(alone.lengths[0])], alone.hidden_states[0])
        torch.testing.assert_close(out.clips.hidden_states[b, : int(alone.clips.lengths[0])],
                                   alone.clips.hidden_states[0])


def test_memory_bank_stays_bounded_over_a_long_stream() -> None:
    torch.manual_seed(0)
    bank = MemoryBank(capacity=24)
    for step in range(60):
        times = torch.arange(step * 10, step * 10 + 10, dtype=torch.float).expand(2, -1) * 0.1
        bank.update(torch.randn(2, 10, 16), times, lengths=torch.tensor([10, 7]))
        assert int(bank.lengths.max()) <= 24
    memory = bank.read()
    assert memory.hidden_states.shape == (2, 24, 16) and memory.lengths.tolist() == [24, 24]
    torch.testing.assert_close(bank.sizes.sum(1), torch.tensor([600.0, 420.0]))
    assert (bank.timestamps[0, 1:] > bank.timestamps[0, :-1]).all()  # neighbours only: time order kept
    assert bank.timestamps[0, 0] < 5 and bank.timestamps[0, -1] > 55  # the whole stream is covered


def test_memory_bank_errors() -> None:
    bank = MemoryBank(4)
    with pytest.raises(ValueError, match="empty"):
        bank.read()
    bank.update(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="`tokens` expected"):
        bank.update(torch.randn(1, 3, 9))
    with pytest.raises(ValueError, match="`capacity`"):
        MemoryBank(0)
