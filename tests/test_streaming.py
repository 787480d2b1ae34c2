"""Which modules a stream opens: a model's media encoders run on whole items at every call, so a stream opened
on the model (or on a model holding it) leaves them offline, whatever path reaches them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import nn

import omnikit
from omnikit.streaming import (
    StreamingContainer,
    StreamingModule,
    StreamingState,
    is_streaming,
    stream_members,
    streaming,
)


@dataclass
class _State(StreamingState):
    batch_size: int


class _Leaf(StreamingModule[_State]):
    def init_streaming_state(self, batch_size: int) -> _State:
        return _State(batch_size)


class _Model(StreamingContainer, nn.Module):
    """A text part that streams and an encoder, also reachable as ``alias``, that runs on whole items."""

    offline_submodules = ("encoder",)

    def __init__(self) -> None:
        super().__init__()
        self.text = _Leaf()
        self.encoder = nn.Sequential(_Leaf(), _Leaf())
        self.alias = self.encoder


def _opened(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, StreamingModule) and m.streaming_state is not None}


def test_stream_leaves_offline_submodules_offline_by_every_path() -> None:
    model = _Model()
    assert stream_members(model) == [model.text]
    with model.streaming(2):
        assert _opened(model) == {"text"}
        assert is_streaming(model) and not is_streaming(model.encoder)
        with streaming(model.encoder, 13):  # the encoder's own stream (e.g. chunked audio) is its own business
            assert model.encoder[0].streaming_state.batch_size == 13
    assert not _opened(model)
    outer = nn.ModuleDict({"model": model})  # held by another module: still offline
    with streaming(outer, 3):
        assert _opened(outer) == {"model.text"}


def test_a_model_of_offline_submodules_only_cannot_stream_and_a_wrong_name_raises() -> None:
    model = _Model()
    del model.text
    with pytest.raises(ValueError, match="no streaming submodules"), model.streaming(1):
        pass
    model.offline_submodules = ("encoders",)
    with pytest.raises(ValueError, match=r"_Model\.offline_submodules names `encoders`, which it does not have"):
        stream_members(model)


#: Registered models holding media encoders -> the attributes where they sit.
_MEDIA_ENCODERS = {
    "omni_early_tiny": ["adapters"],
    "omni_xattn_tiny": ["adapters"],
    "thinker_talker_tiny": ["omni.adapters"],
    "qwen2_5_omni_thinker_tiny": ["audio_encoder", "vision_encoder"],
    "qwen3_omni_thinker_tiny": ["audio_encoder", "vision_encoder"],
}


@pytest.mark.parametrize("name", sorted(_MEDIA_ENCODERS))
def test_a_model_stream_never_opens_its_media_encoders(name: str) -> None:
    """Their encoders hold streaming modules (attention), which a text stream opened with the batch of
    text rows instead of media items (one audio item is several windows: a batch error, a mask error)."""
    model = omnikit.create_model(name, device="meta")
    encoders = [model.get_submodule(path) for path in _MEDIA_ENCODERS[name]]
    inside = [m for encoder in encoders for m in encoder.modules() if isinstance(m, StreamingModule)]
    assert inside, "the encoders hold streaming modules"
    with streaming(model, 2):
        assert all(m.streaming_state is None for m in inside)
        assert is_streaming(model)
    assert not is_streaming(model)
