"""Cross-attention fusion's markers as tensor ops: rows with different numbers and kinds of media items give
what each row gives alone, compiled (``fullgraph=True``) equals eager, streaming equals one call, eager errors."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import FusionLayer
from omnikit.fusion.models import TINY_TOKENS

V, A = TINY_TOKENS.video, TINY_TOKENS.audio


def _model(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = omnikit.create_model("omni_xattn_tiny", **overrides).eval()
    with torch.no_grad():  # open gates: the media reach the logits
        for layer in model.modules():
            if isinstance(layer, FusionLayer):
                layer.fusion.attn_gate.fill_(0.8)
                layer.fusion.ff_gate.fill_(-0.6)
    return model


def _batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Row 0: video, audio, video; row 1: audio; row 2: no media (its padding holds a marker, ignored)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(8, 256, (3, 10), generator=g)
    ids[0, [0, 3, 7]] = torch.tensor([V, A, V])
    ids[1, 2] = A
    ids[2, 8] = V
    media = {"frames": torch.randn(2, 2, 3, 8, 8, generator=g), "audio_features": torch.randn(2, 16, 64, generator=g),
             "audio_lengths": torch.tensor([40, 64])}  # 10 and 16 audio tokens
    return ids, media


def _rows_alone(model: torch.nn.Module, ids: torch.Tensor, media: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each row run by itself with only its own items."""
    features, lengths = media["audio_features"], media["audio_lengths"]
    row0 = model(ids[:1], frames=media["frames"], audio_features=features[:1, :, :40], audio_lengths=lengths[:1])
    row1 = model(ids[1:2], audio_features=features[1:], audio_lengths=lengths[1:])
    row2 = model(ids[2:, :8])
    return torch.cat([row0, row1, torch.nn.functional.pad(row2, (0, 0, 0, 2))])


@pytest.mark.parametrize("overrides", [{}, {"num_latents": None, "only_latest": True}])
def test_each_row_reads_its_own_items_in_marker_order_compiled_or_not(overrides: dict) -> None:
    model = _model(**overrides)
    ids, media = _batch()
    lengths = torch.tensor([10, 10, 8])
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        eager = model(ids, lengths=lengths, **media)
        alone = _rows_alone(model, ids, media)
        traced = compiled(ids, lengths=lengths, **media)
    torch.testing.assert_close(eager[:, :8], alone[:, :8], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eager[:2], alone[:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-4)
    text_only = model.lm.lm_head(model.lm.decoder(model.lm.embed(ids[:1])))
    assert not torch.allclose(eager[:1, 3:], text_only[:, 3:], atol=1e-3), "the items reach row 0"


@pytest.mark.parametrize("overrides", [{}, {"num_latents": 4}, {"num_latents": None, "only_latest": True}])
@pytest.mark.parametrize("audio_frames, audio_lengths", [(64, [40, 64]), (8, [5, 8])])
def test_streamed_chunks_equal_one_call(overrides: dict, audio_frames: int, audio_lengths: list[int]) -> None:
    """Items whose markers come in later chunks; audio of several encoder windows or of one, an item shorter
    than the features (the encoder runs on whole items at every call: the text stream never opens its attention)."""
    model = _model(**overrides)
    ids, media = _batch()
    ids = ids[:2]
    media = {**media, "audio_features": media["audio_features"][..., :audio_frames],
             "audio_lengths": torch.tensor(audio_lengths)}
    with torch.no_grad():
        full = model(ids, **media)
        with model.streaming(2):
            chunks = [model(chunk, **media) for chunk in ids.split([2, 3, 1, 4], dim=1)]
        text_only = model.lm.lm_head(model.lm.decoder(model.lm.embed(ids)))
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full[:, 3:], text_only[:, 3:], atol=1e-3), "the items reach the logits"


def _drifting() -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Row 0: video 0, audio 3, video 7; row 1: audio 2, video 5; three videos and the rows of every item."""
    model = _model()
    ids, media = _batch()
    ids = ids[:2].clone()
    ids[1, 5] = V
    media = {**media, "frames": torch.cat([media["frames"], media["frames"][:1].flip(-1)])}
    return model, ids, media, {"video": torch.tensor([0, 0, 1]), "audio": torch.tensor([0, 1])}


def test_stream_raises_where_items_would_be_assigned_otherwise_than_in_one_call() -> None:
    """Items are counted row by row: row 1's video marker, streamed before row 0's second one, took item 1,
    which one full call gives row 0's second marker. The stream raises when that marker comes, instead of
    streaming outputs that differ from one call; chunks that keep the order stream as one call."""
    model, ids, media, _ = _drifting()
    with torch.no_grad():
        full = model(ids, **media)
        with model.streaming(2):
            kept = [model(chunk, **media) for chunk in ids.split([8, 2], dim=1)]
        torch.testing.assert_close(torch.cat(kept, dim=1), full, atol=1e-5, rtol=1e-4)
        with model.streaming(2):
            model(ids[:, :6], **media)
            with pytest.raises(ValueError, match="video: row 0's video marker at position 7 comes after row 1's"):
                model(ids[:, 6:], **media)


def test_media_rows_stream_rows_in_any_order_as_one_call() -> None:
    """With the row of every item given, a row's markers read its own items: the chunks that drift without
    it stream as one call, and one call equals the default (items listed row by row) or items listed in
    another order with their rows."""
    model, ids, media, rows = _drifting()
    order = torch.tensor([2, 0, 1])  # the videos listed row 1's first
    shuffled = {**media, "frames": media["frames"][order]}
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        full = model(ids, **media)
        torch.testing.assert_close(model(ids, media_rows=rows, **media), full)
        torch.testing.assert_close(model(ids, media_rows={**rows, "video": rows["video"][order]}, **shuffled), full)
        torch.testing.assert_close(compiled(ids, media_rows=rows, **media), full, atol=1e-5, rtol=1e-4)
        with model.streaming(2):
            chunks = [model(chunk, media_rows=rows, **media) for chunk in ids.split([6, 4], dim=1)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-4)


def test_media_rows_errors_name_the_argument() -> None:
    model, ids, media, rows = _drifting()
    with pytest.raises(ValueError, match="video: row 0 of `input_ids` holds 2 video marker\\(s\\) but "
                                         "`media_rows\\['video'\\]` gives it 1 item"):
        model(ids, media_rows={"video": torch.tensor([0, 1, 1])}, **media)
    with pytest.raises(ValueError, match="`media_rows\\['video'\\]` expected rows in \\[0, 2\\)"):
        model(ids, media_rows={"video": torch.tensor([0, 0, 2])}, **media)
    with pytest.raises(ValueError, match="`media_rows\\['video'\\]` expected shape"):
        model(ids, media_rows={"video": torch.tensor([0, 1])}, **media)
    with pytest.raises(ValueError, match="`media_rows\\['audio'\\]` given but no audio media"):
        model(ids[:, :2], media_rows={"audio": rows["audio"]}, frames=media["frames"][:1])
    with model.streaming(2):  # a stream may not have reached a row's items yet, but never holds more markers
        model(ids[:, :6], media_rows=rows, **media)
        with pytest.raises(ValueError, match="row 1 of `input_ids` holds 2 video marker"):
            model(torch.tensor([[9], [V]]), media_rows=rows, **media)


def test_marker_errors_in_eager_mode() -> None:
    model = _model()
    ids, media = _batch()
    with pytest.raises(ValueError, match="has a audio marker but no audio input was given"):
        model(ids[:2], frames=media["frames"])
    with pytest.raises(ValueError, match="2 audio item\\(s\\) given but `input_ids` holds 1 audio marker"):
        model(ids[:1], **media)
    with pytest.raises(ValueError, match="more video markers than the 2 video item"):
        model(ids, **media)  # row 2's marker counts without `lengths`
    model(ids, lengths=torch.tensor([10, 10, 8]), **media)


def test_audio_adapter_padded_tokens_are_its_packed_tokens() -> None:
    model = _model()
    _, media = _batch()
    adapter = model.adapters["audio"]
    with torch.no_grad():
        adapted = adapter(media["audio_features"], media["audio_lengths"])
    padded, packed = adapted.media, adapted.tokens
    assert adapted.items.tolist() == padded.lengths.tolist() == [10, 16]
    torch.testing.assert_close(padded.hidden_states[0, :10], packed[:10])
    torch.testing.assert_close(padded.hidden_states[1], packed[10:])
    assert not padded.hidden_states[0, 10:].any()
