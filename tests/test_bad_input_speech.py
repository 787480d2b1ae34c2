"""Talker, duplex and streaming under bad input: codes range-checked, stream misuse named."""

from __future__ import annotations

import pytest
import torch

from omnikit.streaming import streaming


@pytest.fixture()
def talker(tiny_model) -> torch.nn.Module:
    return tiny_model("talker_tiny")


def _codes(talker: torch.nn.Module, value: int, batch: int = 1, frames: int = 4) -> torch.Tensor:
    return torch.full((batch, talker.config.num_codebooks, frames), value)


def _text(talker: torch.nn.Module, batch: int = 1, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, frames, talker.config.thinker_dim)


@pytest.mark.parametrize("value", [-1, "vocab"])
def test_talker_codes_out_of_range_are_named(talker, value) -> None:
    value = talker.config.vocab if value == "vocab" else value
    with pytest.raises(ValueError, match=r"`codes` expected codes in \[0, \d+\)"):
        talker(_codes(talker, value), _text(talker))


def test_talker_lengths_past_the_frames_are_named(talker) -> None:
    with pytest.raises(ValueError, match=r"`lengths` expected values in \[1, 4\]"):
        talker(_codes(talker, 0), _text(talker), lengths=torch.tensor([9]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frames_per_token": 0}, "`frames_per_token` expected an int > 0"),
        ({"max_frames": 0}, "`max_frames` expected an int > 0"),
        ({"max_frames": -1}, "`max_frames` expected an int > 0"),
        ({"batch_size": 0}, "`batch_size` expected an int > 0"),
        ({"min_frames": -1}, "`min_frames` expected an int >= 0"),
    ],
)
def test_talker_stream_settings_are_named(talker, kwargs, message) -> None:
    states = iter([torch.randn(1, talker.config.thinker_dim)] * 3)
    with pytest.raises(ValueError, match=message):
        list(talker.stream_codes(states, **{"batch_size": 1, "max_frames": 3, **kwargs}))


def test_talker_stream_text_of_another_batch_is_named(talker) -> None:
    states = iter([torch.randn(2, talker.config.thinker_dim)])
    with pytest.raises(ValueError, match=r"`text_steps` expected shape \(1, \d+\)"):
        list(talker.stream_codes(states, batch_size=1, max_frames=2))


@pytest.fixture()
def duplex(tiny_model) -> torch.nn.Module:
    return tiny_model("duplex_tiny")


@pytest.mark.parametrize("offset", [1, -1])
def test_duplex_user_code_past_the_pad_id_is_refused(duplex, offset) -> None:
    """A user code one past the pad id used to read the next codebook's embedding rows."""
    k, pad = duplex.config.num_codebooks, duplex.config.codebook_size
    value = pad + 1 if offset == 1 else -1
    with pytest.raises(ValueError, match=r"`user_frames` expected codes \(pad included\) in \[0, \d+\)"):
        list(duplex.stream([torch.full((1, k), value)]))
    steps = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="`user`"):
        duplex(steps, torch.zeros(1, k, 5, dtype=torch.long), torch.full((1, k, 5), value))


def test_stream_batch_mismatch_names_the_argument(tiny_model) -> None:
    codec = tiny_model("seanet_codec_tiny")
    with codec.streaming(2), pytest.raises(ValueError, match=r"`codes` has batch 3 .* batch_size=2"):
        codec.decode(torch.zeros(3, codec.num_codebooks, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="`batch_size` expected an int >= 1"), streaming(codec, 0):
        pass
