"""Talker strategies: how the ``K`` codes of a frame are predicted from the temporal decoder's state.

A strategy is a :class:`TalkerHead` subclass registered under a name with
:func:`register_talker_head`; ``TalkerConfig(strategy=name)`` then builds it. The head makes the
modules it needs (:attr:`TalkerHead.modules`); the :class:`~omnikit.speech.Talker` owns them under
those names, so they are its state-dict keys (``heads.*``, ``predictor.*`` for the built-in ones)::

    @register_talker_head("my_strategy")
    class MyHead(TalkerHead):
        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.dim, config.num_codebooks * config.vocab)
            self.modules = {"heads": self.proj}
        def logits(self, h, codes): ...
        def next_column(self, h, step, pick): ...
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from omnikit.utils.checks import check_choice

if TYPE_CHECKING:
    from omnikit.models.decode_cache import CompileOption
    from omnikit.speech.talker import TalkerConfig

__all__ = ["TALKER_HEADS", "Pick", "TalkerHead", "build_talker_head", "register_talker_head"]

#: ``pick(k, logits (B, V)) -> ids (B,)``: chooses code ``k`` of a frame (sampling, banned ids).
Pick = Callable[[int, torch.Tensor], torch.Tensor]


class TalkerHead:
    """One Talker strategy (a plain object; the Talker owns its :attr:`modules`).

    Shapes: ``h`` is the temporal decoder's output, ``(B, S, dim)`` over steps or ``(B, dim)`` for one
    step; codes are ids in ``[0, vocab)`` with ``bos = codebook_size`` and ``eos = codebook_size + 1``.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: TalkerConfig) -> None:
        self.config = config
        self.bos = config.codebook_size
        #: the modules this head needs, by the attribute name the Talker registers them under.
        self.modules: dict[str, nn.Module] = {}

    @property
    def delay(self) -> int:
        """Steps between a frame's first code and its completion."""
        return 0

    def layout(self, codes: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, K, F)`` -> the step layout ``(B, K, F + delay)`` the temporal decoder reads."""
        return codes

    def logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``h (B, F + delay, dim)``, target ``codes (B, K, F)`` -> ``(B, F, K, vocab)``."""
        raise NotImplementedError

    def next_column(self, h: torch.Tensor, step: int, pick: Pick) -> torch.Tensor:
        """The next input column ``(B, K)`` of the step layout from ``h (B, dim)`` at ``step``."""
        raise NotImplementedError

    def static_decoding(self, batch_size: int, compile: CompileOption) -> AbstractContextManager[None]:
        """Context of a static-cache stream of frames (``Talker.stream_codes(cache="static")``): a head
        with its own decoder preallocates it here (and compiles its steps when ``compile``); by
        default nothing."""
        return nullcontext()

    def frame(self, columns: list[torch.Tensor]) -> torch.Tensor | None:
        """The frame ``(B, K)`` completed by the last of the sampled ``columns`` (None: not yet)."""
        return columns[-1]


#: Registered strategies by name.
TALKER_HEADS: dict[str, type[TalkerHead]] = {}


def register_talker_head(name: str) -> Callable[[type[TalkerHead]], type[TalkerHead]]:
    """Class decorator: make ``TalkerConfig(strategy=name)`` build this head. A taken name is an error."""

    def add(cls: type[TalkerHead]) -> type[TalkerHead]:
        if name in TALKER_HEADS:
            raise ValueError(f"Talker strategy {name!r} is already registered ({TALKER_HEADS[name].__qualname__})")
        cls.name = name
        TALKER_HEADS[name] = cls
        return cls

    return add


def build_talker_head(config: TalkerConfig) -> TalkerHead:
    """The head of ``config.strategy``; an unknown name raises naming the registered ones."""
    check_choice(config.strategy, "strategy", TALKER_HEADS)
    return TALKER_HEADS[config.strategy](config)
