"""A ``torch.utils.data.Dataset`` over a JSONL manifest or a folder of media files.

::

    dataset = MediaDataset("train.jsonl", processor, on_error="skip")
    loader = DataLoader(dataset, batch_size=16, num_workers=2, collate_fn=dataset.collate)

Manifest lines are :class:`~omnikit.data.Sample` fields (relative paths are relative to the
manifest), e.g. ``{"text": "<audio> what is said?", "audios": ["a.wav"]}``. A folder gives one sample
per media file: ``"<audio>"`` / ``"<video>"`` / ``"<image>"`` followed by the text of a same-named
``.txt`` file when there is one. Files are decoded in ``__getitem__`` (in the workers); the batch is
planned and collated by ``collate`` (also in the workers). The dataset holds no open files, so it is
safe with any number of workers.

``on_error="raise"`` (default): a missing file fails at construction and a corrupt one when read,
with :class:`~omnikit.data.MediaFileError` naming it; ``"skip"``: the sample is dropped with a
warning naming the file (corrupt samples are dropped from their batch), and a sample longer than
the processor's ``max_length`` (:class:`~omnikit.data.SampleTooLongError`) is dropped from its
batch with a warning naming it and its counts.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from omnikit.data.processor import OmniBatch, OmniProcessor, SampleTooLongError
from omnikit.data.samples import LoadedSample, MediaFileError, as_sample
from omnikit.utils.checks import check_choice

__all__ = ["MediaDataset"]

_KINDS = {
    "audios": (".wav", ".flac", ".mp3", ".ogg", ".m4a"),
    "videos": (".mp4", ".mkv", ".webm", ".avi", ".mov"),
    "images": (".png", ".jpg", ".jpeg", ".bmp", ".webp"),
}
_MARKER = {"audios": "<audio>", "videos": "<video>", "images": "<image>"}


class MediaDataset(Dataset):
    """Samples of a JSONL manifest or a folder, decoded with ``processor`` (see the module docstring)."""

    def __init__(self, source: str | os.PathLike, processor: OmniProcessor, *, on_error: str = "raise") -> None:
        check_choice(on_error, "on_error", ("raise", "skip"))
        self.processor, self.on_error = processor, on_error
        path = Path(source)
        entries = _folder(path) if path.is_dir() else _manifest(path)
        self.samples: list[tuple[str, dict[str, Any]]] = []
        for where, fields in entries:
            missing = [f for f in _files(fields) if not os.path.isfile(f)]
            if missing:
                self._fail(MediaFileError(missing[0], f"no such file ({where})"))
                continue
            self.samples.append((where, fields))

    def _fail(self, error: MediaFileError) -> None:
        if self.on_error == "raise":
            raise error
        warnings.warn(f"skipping a sample: {error}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LoadedSample | None:
        where, fields = self.samples[index]
        try:
            return self.processor.load(fields, source=where)
        except MediaFileError as err:
            self._fail(err)
            return None

    def collate(self, items: list[LoadedSample | None]) -> OmniBatch:
        """``collate_fn`` for a ``DataLoader``: drops skipped samples, plans and pads the rest."""
        kept = [item for item in items if item is not None]
        while kept:
            try:
                return self.processor.collate(kept)
            except SampleTooLongError as err:
                if self.on_error == "raise":
                    raise
                warnings.warn(f"skipping a sample: {err}", stacklevel=2)
                kept = [item for item in kept if item.source != err.source]
        raise MediaFileError(", ".join(str(i) for i in items), "every sample of this batch failed to load or fit")


def _manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise MediaFileError(str(path), "no such manifest file or folder")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as err:
            raise MediaFileError(str(path), f"line {number} is not JSON ({err})") from err
        as_sample(fields)  # unknown keys fail here, naming them
        for kind in _KINDS:
            fields[kind] = [_resolve(path.parent, f) for f in fields.get(kind, [])]
        entries.append((where, fields))
    return entries


def _folder(path: Path) -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for file in sorted(path.iterdir()):
        kind = next((k for k, ext in _KINDS.items() if file.suffix.lower() in ext), None)
        if kind is None:
            continue
        sidecar = file.with_suffix(".txt")
        text = _MARKER[kind] + (" " + sidecar.read_text().strip() if sidecar.is_file() else "")
        entries.append((str(file), {"text": text, kind: [str(file)]}))
    return entries


def _resolve(root: Path, file: Any) -> Any:
    return str(root / file) if isinstance(file, str) and not os.path.isabs(file) else file


def _files(fields: dict[str, Any]) -> list[str]:
    return [f for kind in _KINDS for f in fields.get(kind, []) if isinstance(f, str)]
