"""Processor-style inputs for the omni Thinkers, written item by item and packed like a Qwen-Omni processor.

:class:`OmniPrompt` writes the token row of one batch item (text, images, videos with or without
their soundtrack, audio clips: placeholder runs of the right lengths between the model's start/end
markers) and keeps that item's random media. :func:`collate_prompts` packs items into the keywords of
:meth:`OmniThinker.forward` the way the processor does: rows padded (left by default, ``attention_mask``
0 there), the pixels of all images (and of all videos) concatenated in order with their ``(n, 3)``
patch grids, the mel features of all audio clips padded into ``(N, n_mels, L)`` with
``feature_attention_mask``. A batch is a list of items, so any item can be packed again alone: the
model contract (:func:`prompt_contract_inputs`) runs items one by one this way::

    prompt = OmniPrompt(model).text(3).image(16, 24).audio(30).video(4, 16, 16, seconds_per_step=0.5).text(2)
    logits = model(**collate_prompts([prompt]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from omnikit.fusion.modality import MODALITIES
from omnikit.fusion.tmrope import VisualGrid, item_positions
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_choice
from omnikit.vision.patch_grids import host_grids
from omnikit.vision.window_vit import patchify_frames

if TYPE_CHECKING:
    from omnikit.fusion.omni_thinker import OmniThinker

__all__ = ["OmniPrompt", "collate_prompts", "contract_prompts", "pad_rows", "prompt_contract_inputs"]

_VIDEO = MODALITIES.index("video")


class OmniPrompt:
    """One batch item of an :class:`OmniThinker`: its ids and its media, appended left to right.

    Args:
        model: the Thinker whose placeholder ids, markers, patch geometry, mel bins and audio token
            arithmetic the item follows.
        generator: random source of the text ids and the media values.
        text_ids: ``[low, high)`` range of text ids (default: 0 up to the lowest special id).
    """

    def __init__(self, model: OmniThinker, *, generator: torch.Generator | None = None,
                 text_ids: tuple[int, int] | None = None) -> None:
        self.model = model
        self.generator = generator
        tokens = model.text_model.media_tokens
        specials = [*tokens.as_dict().values(), *model.marker_tokens.values(), model.text_model.config.vocab_size]
        self.text_ids = text_ids or (0, min(specials))
        self.ids: list[int] = []
        self.pixels: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
        self.grids: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
        self.seconds: list[float] = []
        self.mels: list[torch.Tensor] = []
        self.soundtracks = 0

    def _marker(self, name: str) -> list[int]:
        marker = self.model.marker_tokens.get(f"{name}_token_id")
        return [] if marker is None else [marker]

    def _wrap(self, kind: str, body: list[int]) -> OmniPrompt:
        self.ids += self._marker(f"{kind}_start") + body + self._marker(f"{kind}_end")
        return self

    def text(self, n: int) -> OmniPrompt:
        """``n`` random text ids."""
        self.ids += torch.randint(*self.text_ids, (n,), generator=self.generator).tolist()
        return self

    def tokens(self, ids: Sequence[int]) -> OmniPrompt:
        """Given token ids (tokenized text, chat markers)."""
        self.ids += list(ids)
        return self

    def _visual(self, kind: str, frames: int, height: int, width: int, seconds: float,
                clip: torch.Tensor | None = None) -> VisualGrid:
        vision = self.model.vision_encoder
        if vision is None:
            raise OmnikitValueError(f"an {kind} needs a vision encoder but the model has none")
        c = vision.config
        if clip is None:
            clip = torch.randn(1, frames, c.in_chans, height, width, generator=self.generator)
        pixels, grid = patchify_frames(clip, torch.tensor([frames]), tuple(c.patch), c.merge_size)
        self.pixels[kind].append(pixels)
        self.grids[kind].append(grid)
        return VisualGrid.from_patch_grid(grid[0], c.merge_size, seconds)

    def image(self, height: int, width: int, *, pixels: torch.Tensor | None = None) -> OmniPrompt:
        """A ``height x width`` image (multiples of ``patch * merge_size`` pixels): ``pixels (C, H, W)``
        (normalised as the model expects) or random."""
        grid = self._visual("image", 1, height, width, 1.0, None if pixels is None else pixels[None, None])
        return self._wrap("vision", [self.model.text_model.media_tokens.image] * grid.num_tokens)

    def _audio_tokens(self, frames: int, mel: torch.Tensor | None = None) -> int:
        encoder = self.model.audio_encoder
        if encoder is None:
            raise OmnikitValueError("an audio clip needs an audio encoder but the model has none")
        self.mels.append(torch.randn(encoder.config.n_mels, frames, generator=self.generator) if mel is None else mel)
        return int(encoder.output_lengths(torch.tensor([frames]))[0])

    def audio(self, frames: int, *, mel: torch.Tensor | None = None) -> OmniPrompt:
        """An audio clip of ``frames`` mel frames: ``mel (n_mels, frames)`` or random."""
        return self._wrap("audio", [self.model.text_model.media_tokens.audio] * self._audio_tokens(frames, mel))

    def video(self, frames: int, height: int, width: int, *, seconds_per_step: float = 1.0,
              audio_frames: int = 0, clip: torch.Tensor | None = None, mel: torch.Tensor | None = None,
              step_text: int = 0) -> OmniPrompt:
        """A clip of ``frames`` frames (``clip (frames, C, H, W)``, normalised, or random); ``audio_frames > 0``
        gives it a soundtrack of that many mel frames (``mel`` or random), interleaved in time with the
        video tokens (batches then need ``use_audio_in_video``). ``step_text > 0`` writes every temporal step
        as its own run between markers after that many text ids (the timestamps of the Qwen3-VL / Qwen3.5
        processors)."""
        if step_text and audio_frames:
            raise OmnikitValueError("`step_text` (one run per video step) cannot be combined with `audio_frames`")
        grid = self._visual("video", frames, height, width, seconds_per_step, None if clip is None else clip[None])
        self.seconds.append(seconds_per_step)
        tokens = self.model.text_model.media_tokens
        if step_text:
            for _ in range(grid.t):
                self.text(step_text)._wrap("vision", [tokens.video] * (grid.h * grid.w))
            return self
        if not audio_frames:
            return self._wrap("vision", [tokens.video] * grid.num_tokens)
        self.soundtracks += 1
        grid = VisualGrid(grid.t, grid.h, grid.w, seconds_per_step, self._audio_tokens(audio_frames, mel))
        _, kinds = item_positions(grid, "video", self.model.scheme)
        body = [tokens.video if int(k) == _VIDEO else tokens.audio for k in kinds]
        return self._wrap("vision", self._marker("audio_start") + body + self._marker("audio_end"))


def pad_rows(rows: list[list[int]], side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids padded on ``side`` with ``pad_id`` -> ``(ids (B, T), mask (B, T))`` (mask 1 on the rows' ids)."""
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        start = length - len(row) if side == "left" else 0
        ids[b, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, start : start + len(row)] = 1
    return ids, mask


def collate_prompts(
    prompts: Sequence[OmniPrompt], *, padding_side: Literal["left", "right"] = "left", pad_id: int = 0
) -> dict[str, Any]:
    """Pack ``prompts`` into :meth:`OmniThinker.forward` keywords (the processor's names and layout;
    rows padded with ``pad_id``)."""
    check_choice(padding_side, "padding_side", ("left", "right"))
    if not prompts:
        raise OmnikitValueError("`prompts` expected at least one item but got none")
    with_sound = {bool(p.soundtracks) for p in prompts if p.seconds}
    if len(with_sound) > 1 or any(p.soundtracks != len(p.seconds) for p in prompts if p.soundtracks):
        raise OmnikitValueError("`prompts` mix videos with and without soundtracks; use_audio_in_video is per batch")
    ids, mask = pad_rows([p.ids for p in prompts], padding_side, pad_id)
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    mels = [m for p in prompts for m in p.mels]
    if mels:
        frames = torch.tensor([m.shape[-1] for m in mels])
        features = torch.zeros(len(mels), mels[0].shape[0], int(frames.max()))
        for i, mel in enumerate(mels):
            features[i, :, : mel.shape[-1]] = mel
        out["input_features"] = features
        out["feature_attention_mask"] = (torch.arange(features.shape[-1])[None] < frames[:, None]).long()
    for kind, key in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        if any(p.pixels[kind] for p in prompts):
            out[key] = torch.cat([x for p in prompts for x in p.pixels[kind]])
            out[f"{kind}_grid_thw"] = torch.cat([g for p in prompts for g in p.grids[kind]])
    seconds = [s for p in prompts for s in p.seconds]
    if seconds:
        out["video_second_per_grid"] = torch.tensor(seconds)
    if with_sound == {True}:
        out["use_audio_in_video"] = True
    return out


def contract_prompts(model: OmniThinker, lengths: Sequence[int], *, seed: int = 0) -> list[OmniPrompt]:
    """The contract's items: item ``b`` holds ``lengths[b]`` text ids around its media. Item 0: two images,
    an audio clip and a video; every other item: one image and a shorter audio clip (other sizes). A model
    without an audio encoder gets no audio clips."""
    g = torch.Generator().manual_seed(seed)
    c = model.vision_encoder.config
    unit = c.patch[1] * c.merge_size  # pixels per merged token
    hears = model.audio_encoder is not None
    prompts = []
    for b, n in enumerate(lengths):
        head, mid = n // 3, n // 3
        prompt = OmniPrompt(model, generator=g).text(head)
        if b == 0:
            prompt.image(2 * unit, 3 * unit).text(mid)
            if hears:
                prompt.audio(30)
            prompt.image(unit, unit).video(4, 2 * unit, 2 * unit, seconds_per_step=0.5)
        else:
            prompt.image(2 * unit, unit).text(mid)
            if hears:
                prompt.audio(17 + b)
        prompts.append(prompt.text(n - head - mid))
    return prompts


def prompt_contract_inputs(prompts: Sequence[OmniPrompt]) -> ContractInputs:
    """Contract inputs of a left-padded batch of ``prompts``, patch grids as host ints (:func:`host_grids`, the
    form that compiles with ``fullgraph=True``); ``item(b)`` packs prompt ``b`` alone."""
    kwargs = host_grids(collate_prompts(prompts))
    lengths = kwargs["attention_mask"].sum(-1)
    return ContractInputs(
        kwargs, lengths, {"input_ids": 1}, "attention_mask",
        item=lambda b: prompt_contract_inputs([prompts[b]]), padding_side="left",
    )
