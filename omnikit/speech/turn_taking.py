"""Turn-taking: a streaming head over audio-encoder states, and a speaking loop that yields to barge-in.

:class:`TurnTakingHead` labels every frame of the user's audio stream as one of
:data:`TURN_EVENTS` ("keep": the user keeps talking, "yield": the user gives the turn,
"interrupt": the user barges in, "backchannel": "mm-hm", no turn change). It is causal
(a :class:`CausalConv1d` then a linear layer), so it runs chunk by chunk on live audio and the
streamed labels equal the offline ones.

:func:`speak_until_interrupted` plays a Thinker-Talker's speech chunk by chunk while feeding the
head the user's incoming audio states, and stops speaking as soon as an interruption is likely.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.conv import CausalConv1d
from omnikit.speech.thinker_talker import SpeechChunk
from omnikit.streaming import StreamingContainer, streaming
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_input, check_positive

__all__ = ["TURN_EVENTS", "SpeakingResult", "TurnTakingHead", "speak_until_interrupted"]

#: The classes of :class:`TurnTakingHead`, in logit order.
TURN_EVENTS: tuple[str, ...] = ("keep", "yield", "interrupt", "backchannel")


class TurnTakingHead(StreamingContainer, nn.Module):
    """``states (B, T, dim)`` audio-encoder states -> turn-event logits ``(B, T, 4)``, causal.

    Args:
        dim: width of the audio states.
        hidden: width of the causal convolution.
        kernel_size: frames of context per decision (the current one and ``kernel_size - 1`` before).
    """

    supports_streaming = True
    stream_chunk = 2

    def __init__(self, dim: int, *, hidden: int = 64, kernel_size: int = 5) -> None:
        super().__init__()
        check_positive(dim, "dim")
        self.dim = dim
        self.conv = CausalConv1d(dim, hidden, kernel_size)
        self.out = nn.Linear(hidden, len(TURN_EVENTS))

    @property
    def output_dim(self) -> int:
        return len(TURN_EVENTS)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        check_input(states, "states", self, shape=("B", "T", self.dim))
        return self.out(F.gelu(self.conv(states.transpose(1, 2))).transpose(1, 2))

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        states = torch.randn(len(lengths), max(lengths), self.dim, generator=g)
        return ContractInputs({"states": states}, torch.tensor(list(lengths)), {"states": 1})


@dataclass
class SpeakingResult:
    """What :func:`speak_until_interrupted` played.

    Attributes:
        chunks: the speech chunks played, in order.
        interrupted: True when the user barged in before the speech ended.
        interrupt_probability: per played chunk, the highest "interrupt" probability heard.
    """

    chunks: list[SpeechChunk] = field(default_factory=list)
    interrupted: bool = False
    interrupt_probability: list[float] = field(default_factory=list)


@torch.no_grad()
def speak_until_interrupted(
    speech: Iterator[SpeechChunk],
    user_states: Iterable[torch.Tensor],
    head: TurnTakingHead,
    *,
    threshold: float = 0.5,
) -> SpeakingResult:
    """Play ``speech`` chunk by chunk; stop when the user's audio says "interrupt".

    Args:
        speech: chunks from :meth:`ThinkerTalker.stream` (batch 1).
        user_states: the user's audio-encoder states arriving while each chunk plays, one
            ``(1, n, dim)`` tensor per chunk (n may differ).
        head: the turn-taking head (run in streaming mode over the whole call).
        threshold: stop when P(interrupt) of any new frame exceeds it.
    """
    if not 0 < threshold < 1:
        raise OmnikitValueError(f"`threshold` expected a value in (0, 1) but got {threshold}")
    result = SpeakingResult()
    listening = iter(user_states)
    interrupt = TURN_EVENTS.index("interrupt")
    with streaming(head, 1):
        for chunk in speech:
            result.chunks.append(chunk)
            heard = next(listening, None)
            if heard is None:
                continue
            probs = head(heard).softmax(-1)[..., interrupt]
            peak = float(probs.max()) if probs.numel() else 0.0
            result.interrupt_probability.append(peak)
            if peak > threshold:
                result.interrupted = True
                close = getattr(speech, "close", None)
                if close is not None:
                    close()  # stop generating: the Thinker-Talker's stream is abandoned here
                break
    return result
