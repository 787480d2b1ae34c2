"""Packed media of the omni Thinkers without host reads: patch grids as host ints, audio tokens kept padded.

The media encoding path (vision towers' ``forward_patches``, audio tower, scatter at the placeholders,
deepstack levels) and the TMRoPE ids compile with ``fullgraph=True`` when the grids are ints (the
contract's fullgraph check of ``qwen2_5_omni_thinker_tiny`` and ``qwen3_omni_thinker_tiny``).
"""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion.early import placed_tokens
from omnikit.fusion.omni_prompt import collate_prompts, contract_prompts
from omnikit.outputs import EncoderOutput
from omnikit.vision import host_grids, patchify_frames, window_order

THINKERS = ["qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"]
TOWERS = ["qwen2_5_omni_vision_tiny", "qwen3_vit_tiny"]


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name).eval()


def _packed(tower: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images (one with edge windows) and a 3-frame video, packed as a processor does."""
    c = tower.config
    unit = c.patch[1] * c.merge_size
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(1, 1, 3, 3 * unit, 5 * unit, generator=g), torch.randn(1, 1, 3, unit, unit, generator=g),
             torch.randn(1, 3, 3, 2 * unit, 2 * unit, generator=g)]
    rows = [patchify_frames(x, torch.tensor([x.shape[1]]), tuple(c.patch), c.merge_size) for x in clips]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def _tensors(out) -> list[torch.Tensor]:
    """The tensors of a ``forward_patches`` output (merged tokens, and the Qwen3 tower's other outputs)."""
    return [out] if isinstance(out, torch.Tensor) else [out.hidden_states, out.last_hidden_state, *out.deepstack]


@pytest.mark.parametrize("name", TOWERS)
def test_tower_takes_host_grids_with_the_same_outputs(name: str) -> None:
    tower = _build(name)
    pixels, grid = _packed(tower)
    with torch.no_grad():
        want = _tensors(tower.forward_patches(pixels, grid))
        for grids in (grid.tolist(), grid.numpy()):
            for a, b in zip(_tensors(tower.forward_patches(pixels, grids)), want, strict=True):
                assert torch.equal(a, b)


def test_window_order_of_host_grids_equals_tensor_grids() -> None:
    grid = torch.tensor([[1, 6, 10], [3, 8, 8], [2, 16, 4], [1, 2, 2]])
    for got, want in zip(window_order(grid.tolist(), 2, 2), window_order(grid, 2, 2), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", TOWERS)
def test_bad_host_grids_are_named(name: str) -> None:
    tower = _build(name)
    pixels, grid = _packed(tower)
    with pytest.raises(TypeError, match=r"`grid_thw` expected \(t, h, w\) ints"):
        tower.forward_patches(pixels, [[1.0, 2, 2]])
    with pytest.raises(TypeError, match=r"`grid_thw` expected \(t, h, w\) ints"):
        tower.forward_patches(pixels, [[2, 2]])
    with pytest.raises(TypeError, match="`grid_thw` expected an \\(n, 3\\) int tensor or a sequence"):
        tower.forward_patches(pixels, 4)
    with pytest.raises(ValueError, match=r"`pixel_values` expected \d+ rows"):
        tower.forward_patches(pixels, grid.tolist()[:2])
    with pytest.raises(ValueError, match="multiples of merge_size=2"):
        tower.forward_patches(pixels[:3], [[1, 1, 3]])


def test_placed_tokens_put_each_item_at_its_placeholders_in_order() -> None:
    out = EncoderOutput(torch.randn(3, 4, 2), torch.tensor([2, 4, 0]))
    where = torch.zeros(2, 5, dtype=torch.bool)
    where[0, 1:4] = where[1, 0:3] = True  # 6 placeholders over two rows, item 1 spans both
    placed = placed_tokens(out, where)
    assert placed.shape == (2, 5, 2)
    assert torch.equal(placed[where], torch.cat(out.unpad()))


@pytest.mark.parametrize("name", THINKERS)
def test_thinker_host_grids_equal_tensor_grids(name: str) -> None:
    model = _build(name)
    batch = collate_prompts(contract_prompts(model, [13, 9]))
    hosted = host_grids(batch)
    assert hosted["image_grid_thw"] == tuple(map(tuple, batch["image_grid_thw"].tolist()))
    with torch.no_grad():
        assert torch.equal(model(**hosted), model(**batch))


@pytest.mark.slow
@pytest.mark.parametrize("name", TOWERS)
def test_forward_patches_exports_for_fixed_grids(name: str) -> None:
    """``torch.export`` of the packed path with the grids baked in (each grid is another shape)."""
    tower = _build(name)
    pixels, grid = _packed(tower)
    grids = grid.tolist()

    class Packed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, pixel_values: torch.Tensor):
            return self.tower.forward_patches(pixel_values, grids)

    program = torch.export.export(Packed(), (pixels,))
    other = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got, want = program.module()(other), tower.forward_patches(other, grid)
    for a, b in zip(_tensors(got), _tensors(want), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
