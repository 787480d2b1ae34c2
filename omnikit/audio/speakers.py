"""Voices of Qwen2.5-Omni's token2wav: the published ``spk_dict.pt``, read without unpickling code.

A published snapshot ships ``spk_dict.pt``, a torch pickle of ``{speaker name: {"cond": x-vector,
"ref_mel": reference mel, "bos_token": int, ...}}``. :func:`load_speakers` reads it with
``torch.load(weights_only=True)``, whose unpickler builds only tensors, containers and primitives
and refuses any other global (so a tampered file cannot run code), then checks the layout.
:func:`convert_speakers` writes the same voices once as ``speakers.safetensors`` (tensors) plus
``speakers.json`` (names and primitive fields), which :func:`load_speakers` also reads and which
needs no pickle at all.

A voice is chosen by name: ``speakers["Chelsie"]``; an unknown name raises
:class:`UnknownSpeakerError` (a ``ValueError`` and a ``KeyError``) listing the known ones.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = ["Speakers", "UnknownSpeakerError", "Voice", "convert_speakers", "load_speakers"]

_REQUIRED = ("cond", "ref_mel")
_PRIMITIVES = (bool, int, float, str, type(None))


class UnknownSpeakerError(OmnikitValueError, KeyError):
    """A speaker name that the dictionary does not hold (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class Voice:
    """One speaker: ``conditioning`` (the x-vector, ``"cond"``), ``reference_mel`` (``"ref_mel"``) and the other
    fields of its entry (``"bos_token"``: the Talker's text start token for this voice)."""

    name: str
    conditioning: torch.Tensor
    reference_mel: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Speakers(Mapping[str, Voice]):
    """Voices by name (a read-only mapping; unknown names raise :class:`UnknownSpeakerError`)."""

    def __init__(self, voices: Mapping[str, Voice]) -> None:
        self._voices = dict(voices)

    def __getitem__(self, name: str) -> Voice:
        if name not in self._voices:
            raise UnknownSpeakerError(f"`speaker` {name!r} is not in the speaker dictionary; known: "
                                      f"{sorted(self._voices)}")
        return self._voices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._voices)

    def __len__(self) -> int:
        return len(self._voices)

    def __repr__(self) -> str:
        return f"Speakers({sorted(self._voices)})"


def _voice(name: object, entry: object, source: Path) -> Voice:
    if not isinstance(name, str) or not isinstance(entry, Mapping):
        raise OmnikitValueError(f"{source}: expected {{speaker name: {{field: value}}}} but entry {name!r} is "
                                f"{type(entry).__name__}")
    missing = [k for k in _REQUIRED if not isinstance(entry.get(k), torch.Tensor)]
    if missing:
        raise OmnikitValueError(f"{source}: speaker {name!r} expected tensors {list(_REQUIRED)} but lacks {missing}")
    extras = {k: v for k, v in entry.items() if k not in _REQUIRED}
    bad = [k for k, v in extras.items() if not isinstance(v, (torch.Tensor, *_PRIMITIVES))]
    if bad:
        raise OmnikitValueError(f"{source}: speaker {name!r} fields {bad} are neither tensors nor numbers/strings")
    return Voice(name, entry["cond"], entry["ref_mel"], extras)


def _read_pickle(path: Path) -> Speakers:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise OmnikitValueError(f"{path} holds objects other than tensors, containers and primitives; it is "
                                f"refused rather than unpickled ({str(error).splitlines()[0]})") from error
    if not isinstance(data, Mapping):
        raise OmnikitValueError(f"{path}: expected a dict of speakers but got {type(data).__name__}")
    return Speakers({name: _voice(name, entry, path) for name, entry in data.items()})


def _companion(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_safetensors(path: Path) -> Speakers:
    from safetensors.torch import load_file

    index_path = _companion(path)
    if not index_path.is_file():
        raise OmnikitValueError(f"{path}: its names file {index_path.name} is missing (see convert_speakers)")
    tensors = load_file(str(path))
    index = json.loads(index_path.read_text())
    voices = {}
    for name, spec in index.get("speakers", {}).items():
        entry = {key: tensors[ref] for key, ref in spec.get("tensors", {}).items() if ref in tensors}
        voices[name] = _voice(name, {**spec.get("fields", {}), **entry}, path)
    return Speakers(voices)


def load_speakers(path: str | Path) -> Speakers:
    """The voices in ``path``: a ``spk_dict.pt`` (read with ``weights_only=True``), a ``speakers.safetensors``
    written by :func:`convert_speakers`, or a snapshot directory holding either (safetensors first)."""
    path = Path(path)
    if path.is_dir():
        for name in ("speakers.safetensors", "spk_dict.pt"):
            if (path / name).is_file():
                return load_speakers(path / name)
        raise OmnikitValueError(f"{path} holds neither speakers.safetensors nor spk_dict.pt")
    if not path.is_file():
        raise OmnikitValueError(f"`path` {path} is not a file or directory")
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)


def convert_speakers(source: str | Path, target: str | Path | None = None) -> Path:
    """Write the voices of ``source`` (a ``spk_dict.pt``) as ``target`` (default ``speakers.safetensors`` beside
    it) plus its ``.json`` names file; returns the safetensors path. The pickle is read only with
    ``weights_only=True``; the result loads with no pickle at all."""
    from safetensors.torch import save_file

    source = Path(source)
    speakers = load_speakers(source)
    target = source.with_name("speakers.safetensors") if target is None else Path(target)
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {"format": "omnikit speakers 1", "speakers": {}}
    for i, (name, voice) in enumerate(speakers.items()):
        entry = {"cond": voice.conditioning, "ref_mel": voice.reference_mel, **voice.extras}
        refs = {key: f"{i}.{key}" for key, value in entry.items() if isinstance(value, torch.Tensor)}
        tensors.update({refs[key]: entry[key].contiguous() for key in refs})
        index["speakers"][name] = {"tensors": refs,
                                   "fields": {k: v for k, v in entry.items() if k not in refs}}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    _companion(target).write_text(json.dumps(index, indent=1))
    return target
