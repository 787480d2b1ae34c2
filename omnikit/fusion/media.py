"""Media adapters keyed by modality, and the media a fusion model's forward takes.

A fusion model holds its adapters in ``model.adapters``, an ``nn.ModuleDict`` keyed by modality
(``"video"``, ``"audio"``, ``"image"``); a modality plugs in by adding an adapter under its key,
not by editing ``forward``. ``model.video`` / ``model.audio`` read (and assign) those entries.

An adapter is any module ``forward(media, lengths=None) -> AdaptedMedia``; it may add
``check_inputs(media, lengths, names)`` (validation naming the caller's arguments) and
``example(batch, *, generator)`` / ``fixed_example()`` (small inputs for contracts and for runs
on absent media, :mod:`omnikit.fusion.absent`).

Media come either as ``media={"video": frames, "audio": mels}`` with
``media_lengths={"audio": n}`` or as the keywords ``frames=``, ``audio_features=``,
``audio_lengths=``; :func:`collect_media` turns both into one ``{modality: ModalityInput}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.utils.legacy_keys import rename_legacy_keys
from omnikit.utils.parallel import ParallelPlan

__all__ = ["MEDIA_KEYWORDS", "HoldsAdapters", "ModalityInput", "collect_media"]

#: The media keywords fusion models take besides ``media=``: ``{modality: (media keyword, lengths keyword)}``.
MEDIA_KEYWORDS: dict[str, tuple[str, str | None]] = {"video": ("frames", None),
                                                      "audio": ("audio_features", "audio_lengths")}


@dataclass
class ModalityInput:
    """The media of one modality in a call.

    Attributes:
        value: the adapter's input (frames ``(N, T, C, H, W)``, mel features ``(N, n_mels, L)``, ...).
        lengths: ``(N,)`` valid steps per item, or None.
        names: the argument names the two came in (``("frames", ...)`` or ``("media['video']", ...)``),
            for error messages.
    """

    value: torch.Tensor
    lengths: torch.Tensor | None
    names: tuple[str, str]


def collect_media(
    media: Mapping[str, torch.Tensor] | None = None,
    media_lengths: Mapping[str, torch.Tensor] | None = None,
    **keywords: torch.Tensor | None,
) -> dict[str, ModalityInput]:
    """``{modality: ModalityInput}`` from ``media`` / ``media_lengths`` and the :data:`MEDIA_KEYWORDS`.

    A modality given both ways, lengths without media, or an unknown keyword raises, naming them.
    """
    known = {word: (modality, slot) for modality, words in MEDIA_KEYWORDS.items()
             for word, slot in zip(words, ("value", "lengths")) if word}
    unknown = sorted(set(keywords) - set(known))
    if unknown:
        raise OmnikitTypeError(f"unexpected keyword arguments {unknown}; media keywords are {sorted(known)}")
    given: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}  # {modality: {slot: (argument name, value)}}
    for name, mapping, slot in (("media", media, "value"), ("media_lengths", media_lengths, "lengths")):
        if mapping is not None and not isinstance(mapping, Mapping):
            raise OmnikitTypeError(f"`{name}` expected a mapping {{modality: Tensor}} but got {type(mapping).__name__}")
        for modality, value in (mapping or {}).items():
            if value is not None:
                given.setdefault(modality, {})[slot] = (f"{name}[{modality!r}]", value)
    for word, value in keywords.items():
        modality, slot = known[word]
        if value is None:
            continue
        if slot in given.get(modality, {}):
            raise OmnikitValueError(f"{modality}: given both as `{word}` and as `{given[modality][slot][0]}`")
        given.setdefault(modality, {})[slot] = (word, value)
    stray = sorted(m for m, slots in given.items() if "value" not in slots)
    if stray:
        raise OmnikitValueError(f"lengths given for {stray} without their media")
    inputs = {}
    for modality, slots in given.items():
        name, value = slots["value"]
        lengths_name, lengths = slots.get("lengths", (f"media_lengths[{modality!r}]", None))
        if not isinstance(value, torch.Tensor):
            raise OmnikitTypeError(f"`{name}` expected a torch.Tensor but got {type(value).__name__}")
        inputs[modality] = ModalityInput(value, lengths, (name, lengths_name))
    return inputs


class HoldsAdapters:
    """Mixin for a fusion ``nn.Module`` (listed before ``nn.Module``): ``self.adapters``, an
    ``nn.ModuleDict`` ``{modality: adapter}``, with ``self.video`` / ``self.audio`` reading and
    assigning its entries (None: absent). A stream opened on the model (``model.streaming(B)``) never
    streams the adapters: they run on whole media items at every call. Checkpoints saved when the
    adapters were the attributes ``video`` / ``audio`` load through :attr:`legacy_state_prefixes`."""

    #: ``video.*`` / ``audio.*`` keys of checkpoints written before the adapters were keyed by modality.
    legacy_state_prefixes: ClassVar[dict[str, str]] = {f"{m}.": f"adapters.{m}." for m in MEDIA_KEYWORDS}
    #: The adapters encode whole media items at every call: a stream of the model leaves them offline
    #: (:func:`omnikit.streaming.stream_members`).
    offline_submodules: ClassVar[tuple[str, ...]] = ("adapters",)
    adapters: nn.ModuleDict

    def parallel_plan(self) -> ParallelPlan:
        """Each media adapter is an FSDP unit (early and cross-attention fusion alike)."""
        return ParallelPlan(fsdp_units=list(self.adapters.values()))

    def _set_adapters(self, adapters: Mapping[str, nn.Module] | None, allowed: Iterable[str], **named: Any) -> None:
        """``self.adapters`` from ``adapters`` and the keyword adapters ``named`` (``video=``, ``audio=``);
        a modality given twice or one outside ``allowed`` raises."""
        allowed = tuple(allowed)
        merged = {m: a for m, a in named.items() if a is not None}
        for modality, adapter in (adapters or {}).items():
            if modality in merged:
                raise OmnikitValueError(f"the {modality} adapter is given both as `{modality}=` and in `adapters`")
            merged[modality] = adapter
        bad = sorted(set(merged) - set(allowed))
        if bad:
            raise OmnikitValueError(f"`adapters` expected modalities among {allowed} but got {bad}")
        self.adapters = nn.ModuleDict(merged)

    def checked_media(
        self,
        media: Mapping[str, torch.Tensor] | None = None,
        media_lengths: Mapping[str, torch.Tensor] | None = None,
        **keywords: torch.Tensor | None,
    ) -> dict[str, ModalityInput]:
        """:func:`collect_media`, each modality checked by its adapter's ``check_inputs`` (when it has
        one; errors name this call's arguments); media without an adapter or without items raise, naming the
        argument."""
        given = collect_media(media, media_lengths, **keywords)
        for modality, item in given.items():
            if modality not in self.adapters:
                raise OmnikitValueError(f"`{item.names[0]}` given but this model has no {modality} adapter")
            if item.value.ndim and item.value.shape[0] == 0:
                raise OmnikitValueError(
                    f"`{item.names[0]}` expected at least one {modality} item but got shape {tuple(item.value.shape)}; "
                    f"leave {modality} out of the call when a batch has none"
                )
            check = getattr(self.adapters[modality], "check_inputs", None)
            if check is not None:
                check(item.value, item.lengths, item.names)
        return given

    @property
    def video(self) -> nn.Module | None:
        return dict(self.adapters.items()).get("video")

    @property
    def audio(self) -> nn.Module | None:
        return dict(self.adapters.items()).get("audio")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in MEDIA_KEYWORDS and "adapters" in self.__dict__.get("_modules", {}):
            if value is None:
                if name in self.adapters:
                    del self.adapters[name]
            else:
                self.adapters[name] = value
            return
        super().__setattr__(name, value)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        rename_legacy_keys(state_dict, prefix, self.legacy_state_prefixes)
        super()._load_from_state_dict(state_dict, prefix, *args)
