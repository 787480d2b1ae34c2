"""Turn-taking head (streaming == offline) and the speaking loop that stops when interrupted."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.fusion import TURN_EVENTS, speak_until_interrupted


def test_head_streams_like_offline() -> None:
    head = omnikit.create_model("turn_taking_tiny").eval()
    states = torch.randn(2, 11, 24)
    with torch.no_grad():
        offline = head(states)
        with head.streaming(2):
            streamed = torch.cat([head(states[:, a:b]) for a, b in ((0, 3), (3, 4), (4, 11))], dim=1)
    assert offline.shape == (2, 11, len(TURN_EVENTS))
    torch.testing.assert_close(streamed, offline, atol=1e-6, rtol=1e-5)


def _always(head, event: str) -> None:
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.fill_(-10.0)
        head.out.bias[TURN_EVENTS.index(event)] = 10.0


@pytest.mark.parametrize("event", ["keep", "interrupt"])
def test_speaking_stops_only_when_interrupted(event: str) -> None:
    model = omnikit.create_model("thinker_talker_tiny").eval()
    kwargs = model.omni.contract_inputs([12], seed=0).kwargs
    kwargs.pop("lengths")
    prompt = kwargs.pop("input_ids")
    head = omnikit.create_model("turn_taking_tiny").eval()
    _always(head, event)
    user = [torch.randn(1, 2, 24) for _ in range(20)]
    speech = model.stream(prompt, max_new_tokens=8, max_frames=12, chunk_frames=2, **kwargs)
    result = speak_until_interrupted(speech, user, head, threshold=0.5)
    if event == "interrupt":
        assert result.interrupted and len(result.chunks) == 1
    else:
        assert not result.interrupted and sum(c.codes.shape[2] for c in result.chunks) == 12
    with pytest.raises(ValueError, match="threshold"):
        speak_until_interrupted(iter([]), [], head, threshold=1.5)
