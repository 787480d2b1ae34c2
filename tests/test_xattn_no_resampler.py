"""Cross-attention fusion without a resampler (``num_latents=None``): text attends to every encoder token
of an item; items of different lengths are padded and the padding is never attended."""

from __future__ import annotations

import torch

import omnikit
from omnikit.fusion import FusionLayer


def _open_gates(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, FusionLayer):
                layer.fusion.attn_gate.fill_(0.8)
                layer.fusion.ff_gate.fill_(-0.6)


def test_each_row_gives_what_it_gives_alone_whatever_the_other_items_lengths() -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("omni_xattn_tiny", num_latents=None).eval()
    assert model.resampler is None
    _open_gates(model)
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(2, 2, 3, 8, 8, generator=g)   # 4 video tokens each
    mels = torch.randn(2, 16, 64, generator=g)
    lengths = torch.tensor([64, 24])                    # 16 and 6 audio tokens
    ids = torch.randint(8, 256, (2, 6), generator=g)
    ids[:, 0], ids[:, 2] = 2, 3                         # video marker, audio marker
    with torch.no_grad():
        both = model(ids, frames=frames, audio_features=mels, audio_lengths=lengths)
        for b in range(2):
            alone = model(ids[b : b + 1], frames=frames[b : b + 1], audio_features=mels[b : b + 1, :, : lengths[b]],
                          audio_lengths=lengths[b : b + 1])
            torch.testing.assert_close(both[b : b + 1], alone, atol=1e-5, rtol=1e-4)
        moved = mels.clone()
        moved[1, :, 24:] += 5.0                         # beyond row 1's valid audio: must not matter
        assert torch.equal(model(ids, frames=frames, audio_features=moved, audio_lengths=lengths)[1], both[1])
        tokens = model.encode_media(frames=frames, audio_features=mels, audio_lengths=lengths)
    assert tokens["video"].shape == (2, 4, 32) and tokens["audio"].shape == (2, 16, 32)


def test_where_the_square_is_reaches_the_text_only_through_the_position_embeddings() -> None:
    """Cross-attention reads a set: the same square in another patch gives the same output without the
    adapters' position embeddings, and a different one with them."""
    frames = torch.zeros(2, 2, 3, 8, 8)
    frames[0, :, :, :4, :4] = 1.0
    frames[1, :, :, 4:, 4:] = 1.0
    ids = torch.tensor([[2, 40, 41], [2, 40, 41]])
    for positions in (False, True):
        torch.manual_seed(0)
        model = omnikit.create_model("omni_xattn_tiny", num_latents=None, media_positions=positions).eval()
        _open_gates(model)
        with torch.no_grad():
            out = model(ids, frames=frames)
        assert torch.allclose(out[0], out[1], atol=1e-5) != positions
