"""Full-duplex model: step layout, live streaming == teacher-forced forward, losses, validation."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio import delay_codes, undelay_codes
from omnikit.fusion import DuplexModel
from omnikit.fusion.models import tiny_speech_codec

K, PAD = 4, 64


@pytest.fixture(scope="module")
def model() -> DuplexModel:
    torch.manual_seed(0)
    return omnikit.create_model("duplex_tiny").eval()


def test_step_layout_delays_codes_and_pads_text(model: DuplexModel) -> None:
    text = torch.tensor([[5, 6, 7]])
    codes = torch.arange(12).view(1, K, 3)
    steps_text, assistant, user = model.to_steps(text, codes, codes + 20)
    assert steps_text.tolist() == [[5, 6, 7, 0]]  # text_pad_id = 0 after the last frame
    assert assistant[0, 0].tolist() == [0, 1, 2, PAD] and assistant[0, 1].tolist() == [PAD, 3, 4, 5]
    assert torch.equal(undelay_codes(user, model.delays), codes + 20)


def test_live_stream_equals_teacher_forced_forward(model: DuplexModel) -> None:
    """Frame-by-frame greedy decoding picks exactly the argmax of one full forward over the same steps."""
    g = torch.Generator().manual_seed(1)
    user = torch.randint(0, PAD, (2, K, 10), generator=g)
    steps = list(model.stream(user.unbind(2)))
    text = torch.stack([s.text for s in steps], dim=1)  # (B, T)
    said = torch.stack([s.codes for s in steps], dim=2)  # (B, K, T), step layout
    heard = delay_codes(user, PAD, model.delays)[..., :10]
    with torch.no_grad():
        text_logits, code_logits = model.split_logits(model(text, said, heard))
    assert torch.equal(text_logits.argmax(-1), text)
    started = torch.arange(10)[None, :] >= torch.tensor(model.delays)[:, None]  # (K, T)
    picked = code_logits[..., :PAD].argmax(-1).transpose(1, 2)  # never the pad id once started
    assert torch.equal(torch.where(started, picked, PAD), said)
    # completed frames come out undelayed, max(delays) steps after they start
    assert [s.frame is None for s in steps] == [True] + [False] * 9
    frames = torch.stack([s.frame for s in steps[1:]], dim=2)
    assert torch.equal(frames, undelay_codes(said, model.delays)) and frames.shape == (2, K, 9)


def test_stream_sees_the_user_only_up_to_the_previous_frame(model: DuplexModel) -> None:
    user = torch.randint(0, PAD, (1, K, 6))
    changed = user.clone()
    changed[..., 3:] = (changed[..., 3:] + 7) % PAD
    a, b = list(model.stream(user.unbind(2))), list(model.stream(changed.unbind(2)))
    for s in range(4):  # step s reads user frames < s
        assert torch.equal(a[s].text, b[s].text) and torch.equal(a[s].codes, b[s].codes)
    hot = omnikit.fusion.Sampling(temperature=1.0)
    runs = [list(model.stream(changed.unbind(2), text_sampling=hot, audio_sampling=hot,
                              generator=torch.Generator().manual_seed(0))) for _ in range(2)]
    assert all(torch.equal(x.codes, y.codes) for x, y in zip(*runs)), "sampling is reproducible with a generator"


def test_user_changes_the_assistant_and_stream_closes_cleanly(model: DuplexModel) -> None:
    user = torch.randint(0, PAD, (1, K, 8))
    stream = model.stream(user.unbind(2))
    next(stream)
    stream.close()  # stopping early closes the KV cache
    assert all(m.streaming_state is None for m in model.modules() if isinstance(m, omnikit.StreamingModule))
    with torch.no_grad():
        logits = model(*model.to_steps(torch.zeros(1, 8, dtype=torch.long), user, user))
        other = model(*model.to_steps(torch.zeros(1, 8, dtype=torch.long), user, (user + 1) % PAD))
    assert torch.equal(logits[:, :1], other[:, :1]) and not torch.allclose(logits[:, 2:], other[:, 2:])


def test_losses_per_codebook_and_text_and_masking(model: DuplexModel) -> None:
    g = torch.Generator().manual_seed(2)
    text = torch.randint(0, 256, (2, 7), generator=g)
    assistant, user = torch.randint(0, PAD, (2, 2, K, 7), generator=g)
    logits = model(*model.to_steps(text, assistant, user))
    loss = model.loss(logits, text, assistant, lengths=torch.tensor([7, 4]))
    assert loss.codes.shape == (K,) and loss.text.ndim == 0
    torch.testing.assert_close(loss.total, loss.text + loss.codes.mean())
    loss.total.backward()
    assert model.depth.heads[0].weight.grad is not None and model.text_head.weight.grad is not None
    model.zero_grad()
    # frames past `lengths` do not count: their targets may be anything
    noisy = assistant.clone()
    noisy[1, :, 4:] = (noisy[1, :, 4:] + 3) % PAD
    again = model.loss(logits.detach(), text, noisy, lengths=torch.tensor([7, 4]))
    torch.testing.assert_close(again.codes, loss.codes.detach())


def test_a_tiny_duplex_model_learns_to_echo_the_user() -> None:
    """The assistant's codes repeat the user's previous frame: learnable only through the user stream."""
    torch.manual_seed(0)
    model = omnikit.create_model("duplex_tiny", codebook_size=8, text_vocab=8, depth=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        user = torch.randint(0, 8, (16, K, 12), generator=g)
        assistant = torch.cat((torch.zeros_like(user[..., :1]), user[..., :-1]), dim=2)
        text = torch.zeros(16, 12, dtype=torch.long)
        loss = model.loss(model(*model.to_steps(text, assistant, user)), text, assistant).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3, f"chance is ln(8) = 2.08; got {loss.item():.2f}"


def test_duplex_codes_decode_to_audio_with_the_streaming_codec(model: DuplexModel) -> None:
    codec = tiny_speech_codec(K, PAD, sample_rate=24000, ratios=(8, 6, 5, 4, 2)).eval()
    assert codec.frame_rate == model.frame_rate == 12.5
    user = torch.randint(0, PAD, (1, K, 5))
    with torch.no_grad(), codec.streaming(1):
        pieces = [codec.decode(s.frame[..., None]) for s in model.stream(user.unbind(2)) if s.frame is not None]
    frames = torch.stack([s.frame for s in model.stream(user.unbind(2)) if s.frame is not None], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(pieces, dim=-1), codec.decode(frames), atol=1e-6, rtol=1e-5)


def test_bad_inputs_name_the_argument(model: DuplexModel) -> None:
    text = torch.zeros(1, 3, dtype=torch.long)
    codes = torch.zeros(1, K, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="user"):
        model(text, codes, torch.full((1, K, 3), PAD + 1))
    with pytest.raises(ValueError, match="assistant"):
        model(text, codes[:, :2], codes)
    with pytest.raises(ValueError, match="text"):
        model(text + 300, codes, codes)
    with pytest.raises(ValueError, match="user_frames"):
        next(model.stream([torch.zeros(1, 3, dtype=torch.long)]))
    with pytest.raises(ValueError, match="delays"):
        omnikit.create_model("duplex_tiny", delays=(0, 1))


def test_duplex_heads_are_the_talkers_mtp_strategy(model: DuplexModel) -> None:
    from omnikit.speech.depth_head import MTPHead

    assert isinstance(model.head, MTPHead)
    assert model.head.heads is model.text_head and model.head.predictor is model.depth
    assert model.text_head.out_features == 256 and [h.out_features for h in model.depth.heads] == [PAD + 1] * K
    g = torch.Generator().manual_seed(4)
    text, assistant = torch.randint(0, 256, (2, 5), generator=g), torch.randint(0, PAD, (2, K, 5), generator=g)
    with torch.no_grad():
        logits = model(text, assistant, torch.randint(0, PAD, (2, K, 5), generator=g))
        h = torch.randn(2, 64, generator=g)
        column = model.head.next_column(h, 3, lambda k, scores: scores.argmax(-1))
    text_logits, code_logits = model.split_logits(logits)
    assert text_logits.shape == (2, 5, 256) and code_logits.shape == (2, 5, K, PAD + 1)
    assert column.shape == (2, 1 + K) and int(column[:, 0].max()) < 256
