"""Multi-codebook layouts: flatten and delay patterns with exact inverses."""

from __future__ import annotations

import pytest
import torch

from omnikit.audio import delay_codes, delay_mask, flatten_codes, undelay_codes, unflatten_codes


def random_codes(seed: int = 0, shape: tuple[int, int, int] = (3, 4, 7), size: int = 1024) -> torch.Tensor:
    return torch.randint(0, size, shape, generator=torch.Generator().manual_seed(seed))


def test_flatten_is_frame_major_and_invertible() -> None:
    codes = random_codes()
    tokens = flatten_codes(codes)
    assert tokens.shape == (3, 28)
    assert tokens[1, 4 * 5 + 2].item() == codes[1, 2, 5].item()
    assert torch.equal(unflatten_codes(tokens, 4), codes)
    shared = flatten_codes(codes, codebook_size=1024)
    assert shared[0, 3].item() == codes[0, 3, 0].item() + 3 * 1024
    assert torch.equal(unflatten_codes(shared, 4, codebook_size=1024), codes)
    with pytest.raises(ValueError, match="multiple"):
        unflatten_codes(tokens[:, :-1], 4)


def test_delay_pattern_matches_musicgen_layout_and_inverts() -> None:
    codes = torch.arange(1, 7).view(1, 2, 3)  # K=2, T=3
    delayed = delay_codes(codes, pad_id=-1)
    assert delayed.tolist() == [[[1, 2, 3, -1], [-1, 4, 5, 6]]]
    assert torch.equal(delay_mask(2, 3), delayed[0] != -1)
    big = random_codes(1)
    for delays in (None, [0, 1, 1, 1], [0, 2, 5, 3]):
        out = delay_codes(big, pad_id=2048, delays=delays)
        assert torch.equal(undelay_codes(out, delays), big)
        assert torch.equal(delay_mask(4, 7, delays)[None].expand_as(out), out != 2048)


def test_layout_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="delays"):
        delay_codes(random_codes(), 0, delays=[0, 1])
    with pytest.raises(TypeError, match="codes"):
        flatten_codes(torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="delayed"):
        undelay_codes(torch.zeros(1, 4, 2, dtype=torch.long))
