"""Talker strategies, delay layout, streaming speech == offline decoding, Thinker-Talker streaming."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import ThinkerTalker, codebook_loss, per_codebook_loss
from omnikit.fusion.models import tiny_speech_codec


def _restricted_argmax(logits: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Greedy choice as the Talker samples before ``min_frames``: never bos nor eos. ``(B, F, K, V) -> (B, K, F)``."""
    masked = logits.clone()
    masked[..., codebook_size] = float("-inf")
    masked[..., codebook_size + 1] = float("-inf")  # min_frames: no eos
    return masked.argmax(-1).transpose(1, 2)


@pytest.mark.parametrize("strategy", ["delay", "depth", "mtp"])
def test_streamed_codes_equal_teacher_forced_greedy(strategy: str) -> None:
    """KV-cached frame-by-frame decoding picks exactly the argmax of one full forward over its own output."""
    torch.manual_seed(0)
    talker = omnikit.create_model("talker_tiny", strategy=strategy).eval()
    text = torch.randn(2, 5, 64)
    frames = list(talker.stream_codes(iter(text.unbind(1)), batch_size=2, max_frames=10, min_frames=10))
    codes = torch.stack(frames, dim=2)
    assert codes.shape == (2, 4, 10)
    with torch.no_grad():
        logits = talker(codes, text)
    assert logits.shape == (2, 10, 4, talker.config.vocab)
    # the last K - 1 frames' later codebooks (delay) depend on frames past the end: compare the first 7
    assert torch.equal(_restricted_argmax(logits, talker.config.codebook_size)[..., :7], codes[..., :7])


@pytest.mark.parametrize("strategy", ["delay", "depth", "mtp"])
def test_talker_is_causal_over_frames_and_codebooks(strategy: str) -> None:
    talker = omnikit.create_model("talker_tiny", strategy=strategy).eval()
    codes = torch.randint(0, 64, (1, 4, 6))
    text = torch.randn(1, 6, 64)
    changed = codes.clone()
    changed[:, :, 4:] = (changed[:, :, 4:] + 1) % 64
    with torch.no_grad():
        a, b = talker(codes, text), talker(changed, text)
    unseen = 4 - talker.delay  # delay: codebook k of frame f already sees code 0 of frame f + k - 1
    assert torch.equal(a[:, :unseen], b[:, :unseen]), "earlier frames cannot see frames 4+"
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    loss = codebook_loss(a, codes)
    assert loss.ndim == 0 and per_codebook_loss(a, codes).shape == (4,)


def test_speech_codec_is_the_audio_seanet_codec_and_streams_exactly() -> None:
    """The Thinker-Talker speaks through the audio family's causal codec: chunked decoding == offline."""
    model = omnikit.create_model("thinker_talker_tiny").eval()
    codec = model.codec
    assert isinstance(codec, omnikit.audio.SEANetCodec) and not any(p.requires_grad for p in codec.parameters())
    assert (codec.num_codebooks, codec.codebook_size, codec.sample_rate, codec.frame_rate) == (4, 64, 16000, 50)
    codes = torch.randint(0, 64, (2, 4, 11))
    with torch.no_grad():
        offline = codec.decode(codes)
        with codec.streaming(2):
            pieces = [codec.decode(codes[:, :, a:b]) for a, b in ((0, 1), (1, 5), (5, 6), (6, 11))]
    assert offline.shape == (2, 1, 11 * 320)
    torch.testing.assert_close(torch.cat(pieces, dim=-1), offline, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="codes"):
        codec.decode(torch.zeros(1, 3, 2, dtype=torch.long))


def test_thinker_talker_rejects_a_codec_with_another_code_layout() -> None:
    model = omnikit.create_model("thinker_talker_tiny")
    other = tiny_speech_codec(4, 32)
    with pytest.raises(ValueError, match="codebook_size"):
        ThinkerTalker(model.omni, model.talker, other)


@pytest.mark.parametrize("strategy", ["delay", "mtp"])
def test_thinker_talker_streams_text_and_speech(strategy: str) -> None:
    model = omnikit.create_model("thinker_talker_tiny", strategy=strategy).eval()
    kwargs = model.omni.contract_inputs([12], seed=0).kwargs
    kwargs.pop("lengths")
    prompt = kwargs.pop("input_ids")
    chunks = list(model.stream(prompt, max_new_tokens=6, max_frames=10, chunk_frames=3, **kwargs))
    codes = torch.cat([c.codes for c in chunks], dim=2)
    assert codes.shape == (1, 4, 10) and [c.codes.shape[2] for c in chunks][:4] == [3, 3, 3, 1]
    with torch.no_grad():
        offline = model.codec.decode(codes)
    torch.testing.assert_close(torch.cat([c.wav for c in chunks], dim=-1), offline, atol=1e-6, rtol=1e-5)
    text = torch.cat([c.text_tokens for c in chunks], dim=1)
    assert torch.equal(text, model.omni.generate(prompt, max_new_tokens=6, **kwargs).tokens)
    assert chunks[0].text_tokens.shape[1] < 6, "speech starts before the reply is complete"
    assert chunks[0].elapsed <= chunks[-1].elapsed


def test_talker_stops_at_eos() -> None:
    talker = omnikit.create_model("talker_tiny").eval()
    vocab = talker.config.vocab

    def favour_eos(module, args, out):  # codebook 0 always prefers eos
        out = out.clone()
        out[..., talker.eos] += 1e4
        return out

    talker.heads.register_forward_hook(favour_eos)
    assert vocab == talker.eos + 1
    text = torch.ones(1, 3, 64)
    frames = list(talker.stream_codes(iter(text.unbind(1)), batch_size=1, max_frames=20, min_frames=5))
    assert len(frames) == 5, "eos is forbidden before min_frames and then ends the speech"
