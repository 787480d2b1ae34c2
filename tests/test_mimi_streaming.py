"""Streaming Mimi: ``encode`` / ``decode`` frame by frame inside ``streaming()`` equal the whole clip (and
transformers' whole-clip codes), with growable and preallocated (compile-friendly) state."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.convert import load_hf

FRAMES = 9  # > sliding window 5 of the tiny config, so the window is crossed while streaming


def _tok() -> torch.nn.Module:
    torch.manual_seed(0)
    tok = omnikit.create_model("mimi_tiny").eval()
    with torch.no_grad():
        for layer in tok.semantic.layers[:] + tok.acoustic.layers[:]:
            layer.embed_sum.normal_()
    return tok


def _wav(tok, frames: int = FRAMES, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, frames * tok.hop, generator=torch.Generator().manual_seed(1))


def _encode_in_chunks(tok, wav: torch.Tensor, sizes: list[int], max_len: int | None = None) -> torch.Tensor:
    pieces, start = [], 0
    with tok.streaming(wav.shape[0], max_len=max_len):
        for size in sizes:
            pieces.append(tok.encode(wav[..., start : start + size]))
            start += size
    return torch.cat(pieces, dim=-1)


def _decode_frames(tok, codes: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    with tok.streaming(codes.shape[0], max_len=max_len):
        return torch.cat([tok.decode(codes[..., f : f + 1]) for f in range(codes.shape[-1])], dim=-1)


@pytest.mark.parametrize("max_len", [None, 16])
def test_frame_by_frame_encode_and_decode_equal_the_whole_clip(max_len):
    tok = _tok()
    wav = _wav(tok)
    with torch.no_grad():
        codes = tok.encode(wav)
        assert codes.shape == (2, 3, FRAMES)
        assert torch.equal(_encode_in_chunks(tok, wav, [tok.hop] * FRAMES, max_len), codes)
        torch.testing.assert_close(_decode_frames(tok, codes, max_len), tok.decode(codes), rtol=1e-5, atol=1e-6)


def test_uneven_chunks_emit_each_frame_once_its_samples_arrive():
    tok = _tok()
    wav = _wav(tok)
    hop = tok.hop
    sizes = [5, hop - 5, 2 * hop + 3, 1, hop, FRAMES * hop - 4 * hop - 4]
    with torch.no_grad():
        assert torch.equal(_encode_in_chunks(tok, wav, sizes), tok.encode(wav))
        with tok.streaming(2):
            assert tok.encode(wav[..., :3]).shape == (2, 3, 0)  # no whole frame yet


def test_one_stream_encodes_and_decodes_at_once():
    """The duplex use: each step encodes a user frame and decodes a reply frame in the same open stream."""
    tok = _tok()
    wav = _wav(tok)
    with torch.no_grad():
        codes = tok.encode(wav)
        reply = torch.flip(codes, dims=[-1])
        heard, said = [], []
        with tok.streaming(2):
            for f in range(FRAMES):
                heard.append(tok.encode(wav[..., f * tok.hop : (f + 1) * tok.hop]))
                said.append(tok.decode(reply[..., f : f + 1]))
        assert torch.equal(torch.cat(heard, -1), codes)
        torch.testing.assert_close(torch.cat(said, -1), tok.decode(reply), rtol=1e-5, atol=1e-6)


def test_compiled_frame_step_matches_eager_with_static_state():
    """Preallocated caches and whole-frame chunks keep every step's shapes fixed: one compiled step
    function serves the whole stream."""
    tok = _tok()
    wav = _wav(tok, frames=5)
    torch._dynamo.reset()
    step = torch.compile(tok.encode, backend="aot_eager")
    with torch.no_grad(), tok.streaming(2, max_len=8):
        codes = [step(wav[..., f * tok.hop : (f + 1) * tok.hop]) for f in range(5)]
    with torch.no_grad():
        assert torch.equal(torch.cat(codes, dim=-1), tok.encode(wav))


def test_streamed_codes_equal_transformers_whole_clip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from references import hf_tiny_mimi_config, randomise_mimi

    torch.manual_seed(0)
    hf = randomise_mimi(transformers.MimiModel(hf_tiny_mimi_config(transformers)))
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    tok = load_hf(tmp_path)
    wav = _wav(tok)
    with torch.no_grad():
        ref = hf.encode(wav).audio_codes
        assert torch.equal(_encode_in_chunks(tok, wav, [tok.hop] * FRAMES), ref)
        audio = hf.decode(ref).audio_values
        torch.testing.assert_close(_decode_frames(tok, ref), audio, rtol=1e-4, atol=1e-5 * audio.abs().max().item())


def test_stream_rejects_another_batch():
    tok = _tok()
    with tok.streaming(2), pytest.raises(ValueError, match="batch_size=2"):
        tok.encode(torch.zeros(3, 1, tok.hop))


def test_checkpoints_of_the_older_layout_load(tmp_path):
    """Before its transposed convolutions streamed, Mimi saved them as ``conv.*`` (now ``convtr.*``)."""
    import json

    from safetensors.torch import load_file, save_file

    tok = _tok()
    omnikit.save_pretrained(tok, tmp_path)
    path = tmp_path / "model.safetensors"
    old = {k.replace(".convtr.", ".conv."): v for k, v in load_file(str(path)).items()}
    save_file(old, str(path))
    config = json.loads((tmp_path / "config.json").read_text())
    del config["weights_crc32"]  # the file was rewritten on purpose
    (tmp_path / "config.json").write_text(json.dumps(config))
    back = omnikit.load_pretrained(tmp_path).eval()
    codes = torch.randint(0, 16, (1, 3, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(back.decode(codes), tok.decode(codes))
