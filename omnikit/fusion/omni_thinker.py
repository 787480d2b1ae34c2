"""A Thinker that takes what a Qwen-Omni processor returns: audio tower + vision tower + M-RoPE LM.

:class:`OmniThinker` is the structure of transformers' ``Qwen2_5OmniThinkerForConditionalGeneration``
(and the shape of the Qwen3-Omni Thinker): it encodes ``input_features`` with the audio tower and
``pixel_values`` / ``pixel_values_videos`` with the vision tower, scatters the tokens at their
placeholders, computes TMRoPE ids (:func:`tmrope_position_ids`, equal to the reference's
``get_rope_index``) and runs the :class:`Thinker` language model::

    logits = model(input_ids, attention_mask=mask, input_features=mel, feature_attention_mask=mel_mask,
                   pixel_values=pixels, image_grid_thw=grids)

Keyword names are the processor's, so ``model(**processor_outputs)`` works (see
:func:`omnikit.convert.hf_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from omnikit.fusion.absent import encode_media
from omnikit.fusion.boundary import CheckedPrompt, check_media, check_prompt
from omnikit.fusion.early import media_item_ids
from omnikit.fusion.media import ModalityInput
from omnikit.fusion.media_share import MediaShares
from omnikit.fusion.modality import MODALITIES
from omnikit.fusion.omni import FusedInputs
from omnikit.fusion.omni_prompt import contract_prompts, prompt_contract_inputs
from omnikit.fusion.thinker import GenerationOutput, Thinker, ThinkerStep
from omnikit.fusion.tmrope import TMRoPEScheme, VisualGrid, checked_position_ids
from omnikit.fusion.tmrope_traced import ItemTable
from omnikit.fusion.tower_adapters import AudioTowerAdapter, VisionTowerAdapter
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_tensor
from omnikit.utils.parallel import ParallelPlan
from omnikit.vision.patch_grids import Grid, PatchGrids, grid_list

__all__ = ["OmniThinker", "audio_in_video_items"]

_VIDEO, _AUDIO = MODALITIES.index("video"), MODALITIES.index("audio")


def audio_in_video_items(modality_ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> list[bool]:
    """For every audio item in order of appearance (row by row): True when it is the soundtrack of a
    video (its placeholders share one run with video placeholders), False for a standalone audio."""
    check_tensor(modality_ids, "modality_ids", ndim=2, floating=False)
    if key_padding_mask is not None:
        modality_ids = modality_ids.masked_fill(~key_padding_mask, 0)
    items = media_item_ids(modality_ids)
    flags: list[bool] = []
    for codes, runs in zip(modality_ids.tolist(), items.tolist()):
        kinds: dict[int, set[int]] = {}
        for code, run in zip(codes, runs):
            if run >= 0:
                kinds.setdefault(run, set()).add(code)
        flags += [_VIDEO in kinds[run] for run in sorted(kinds) if _AUDIO in kinds[run]]
    return flags


class OmniThinker(nn.Module):
    """Processor inputs -> logits ``(B, T, vocab)``.

    Args:
        text_model: the language model, with ``media_tokens`` (image, video, audio placeholders)
            and M-RoPE sections equal to ``scheme.sections``.
        audio_encoder: ``forward(features (N, n_mels, L), lengths) -> EncoderOutput`` with
            ``output_lengths(lengths)``, or None.
        vision_encoder: ``forward_patches(pixel_values, grid_thw) -> (tokens, D)`` with
            ``config.merge_size`` (a :class:`~omnikit.vision.WindowViT`), or None.
        scheme: the TMRoPE scheme.
        marker_tokens: ids of the start/end markers around media items (``vision_start_token_id``,
            ``audio_end_token_id``, ...); the computation never reads them, they are kept so the
            model's config can be written back (:func:`omnikit.convert.save_hf`).

    ``run_absent_media = True`` (set by :func:`omnikit.distributed.parallelize`) runs a tower whose
    media is absent from the batch on a small fixed input and adds its output times zero to the
    logits, so data-parallel ranks without audio or images issue the same collectives
    (:mod:`omnikit.fusion.absent`).
    """

    #: ``parallelize`` on a ``"cp"`` mesh hooks this model's entry (it fuses whole prompts, see ``context_parallel``)
    context_parallel_entry: ClassVar[bool] = True

    #: The towers encode whole media items at every call: a stream opened on the model leaves them offline.
    offline_submodules = ("audio_encoder", "vision_encoder")

    def __init__(
        self,
        text_model: Thinker,
        *,
        audio_encoder: nn.Module | None,
        vision_encoder: nn.Module | None,
        scheme: TMRoPEScheme,
        marker_tokens: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        sections = text_model.config.mrope_sections
        if sections is None or tuple(sections) != tuple(scheme.sections):
            raise OmnikitValueError(
                f"`scheme.sections` {scheme.sections} must equal the text model's mrope_sections {sections}"
            )
        self.text_model, self.audio_encoder, self.vision_encoder = text_model, audio_encoder, vision_encoder
        self.scheme = scheme
        self.marker_tokens = dict(marker_tokens or {})
        self.run_absent_media = False
        #: set by ``parallelize`` on a ``"cp"`` mesh (:class:`omnikit.distributed.cp.ContextParallel`): ``forward``
        #: then takes the whole prompt and returns this rank's positions of it (``cp_positions``)
        self.context_parallel: Any = None

    def parallel_plan(self) -> ParallelPlan:
        """Each media tower is an FSDP unit of its own."""
        return ParallelPlan(fsdp_units=[m for m in (self.audio_encoder, self.vision_encoder) if m is not None])

    @property
    def output_dim(self) -> int:
        return self.text_model.config.vocab_size

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """A left-padded processor-style batch: item ``b`` holds ``lengths[b]`` text ids around images, audio
        and (item 0) a video (:func:`~omnikit.fusion.omni_prompt.contract_prompts`); media are packed
        across the batch, so ``item(b)`` packs item ``b`` alone."""
        return prompt_contract_inputs(contract_prompts(self, lengths, seed=seed))

    @property
    def adapters(self) -> dict[str, AudioTowerAdapter | VisionTowerAdapter]:
        """``{modality: adapter}``: the towers as media adapters (:mod:`omnikit.fusion.tower_adapters`); the vision
        tower serves the image and the video slot."""
        adapters: dict[str, AudioTowerAdapter | VisionTowerAdapter] = {}
        if self.audio_encoder is not None:
            adapters["audio"] = AudioTowerAdapter(self.audio_encoder)
        if self.vision_encoder is not None:
            visual = VisionTowerAdapter(self._visual, self.vision_encoder.config)
            adapters.update(image=visual, video=visual)
        return adapters

    def _visual(self, pixels: torch.Tensor, grids: Sequence[Grid]) -> torch.Tensor | EncoderOutput:
        """The vision tower's merged tokens of packed patches with their ``(t, h, w)`` grids."""
        return self.vision_encoder.forward_patches(pixels, grids)

    def _given_media(
        self, input_features: torch.Tensor | None, feature_attention_mask: torch.Tensor | None,
        visual: Mapping[str, tuple[torch.Tensor | None, Sequence[Grid] | None, tuple[str, str]]],
    ) -> dict[str, ModalityInput]:
        """The call's media, checked, as ``{modality: ModalityInput}`` (audio lengths from the feature mask; the
        visual items' patch grids as their sizes); ``visual``: ``{modality: (pixels, grids, argument names)}``."""
        given: dict[str, ModalityInput] = {}
        if input_features is not None:
            self._require("audio_encoder", "input_features")
            check_tensor(input_features, "input_features", ndim=3, floating=True)
            if feature_attention_mask is None:
                lengths = torch.full((input_features.shape[0],), input_features.shape[-1], device=input_features.device)
            else:
                check_tensor(feature_attention_mask, "feature_attention_mask",
                             shape=(input_features.shape[0], input_features.shape[-1]))
                lengths = feature_attention_mask.sum(-1).to(input_features.device)
            given["audio"] = ModalityInput(input_features, lengths, ("input_features", "feature_attention_mask"))
        for modality, (pixels, grids, (name, grid_name)) in visual.items():
            if pixels is None:
                continue
            self._require("vision_encoder", name)
            if grids is None:
                raise OmnikitValueError(f"`{name}` given without `{grid_name}` (the (n, 3) patch grids of the items)")
            given[modality] = ModalityInput(pixels, grids, (name, grid_name))
        return given

    def _require(self, name: str, given: str) -> None:
        """Raise, naming argument ``given``, when this model has no tower ``name``."""
        if getattr(self, name) is None:
            raise OmnikitValueError(f"`{given}` given but this model has no {name}")

    def fuse(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: PatchGrids | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: PatchGrids | None = None,
        video_second_per_grid: torch.Tensor | None = None,
        use_audio_in_video: bool = False,
    ) -> FusedInputs:
        """Check the inputs once, encode the media (:func:`~omnikit.fusion.absent.encode_media` over
        :attr:`adapters`), compute TMRoPE ids and the padding mask (``attention_mask != 0``), and check the media
        against the placeholders (:mod:`omnikit.fusion.boundary`).

        The grids may be the processor's ``(n, 3)`` tensors or ``(t, h, w)`` ints per item
        (:func:`~omnikit.vision.host_grids`): as ints they are shape metadata and the media encoding reads no tensor
        value on the host (the audio tokens stay padded, their counts a tensor)."""
        text = self.text_model
        prompt = check_prompt(input_ids, text.config.vocab_size, text.media_tokens)
        padding = None
        if attention_mask is not None:
            check_tensor(attention_mask, "attention_mask", shape=tuple(input_ids.shape))
            padding = attention_mask.to(input_ids.device).bool()
            prompt = prompt.with_padding(padding)
        images = None if image_grid_thw is None else grid_list(image_grid_thw, "image_grid_thw")
        videos = None if video_grid_thw is None else grid_list(video_grid_thw, "video_grid_thw")
        given = self._given_media(input_features, feature_attention_mask, {
            "image": (pixel_values, images, ("pixel_values", "image_grid_thw")),
            "video": (pixel_values_videos, videos, ("pixel_values_videos", "video_grid_thw")),
        })
        # an absent tower runs on a fixed input at its slot (the vision tower at the image and at the video slot)
        # when run_absent_media is on, so every data-parallel rank calls it the same number of times
        # under context parallel each rank encodes a share of the items, the tokens of all are gathered
        split = {} if self.context_parallel is None else {"encode": MediaShares(self.context_parallel)}
        adapted, absent = encode_media(self.adapters, given, run_absent=self.run_absent_media, device=input_ids.device,
                                       **split)
        positions, next_position = self._positions(
            prompt, images=images or (), videos=videos or (), video_seconds=video_second_per_grid,
            audio_tokens=adapted["audio"].items if "audio" in adapted else None, use_audio_in_video=use_audio_in_video,
        )
        media = check_media(prompt, {m: out.media for m, out in adapted.items()}, text.config.dim)
        return FusedInputs(media, positions, next_position, padding, absent)

    def _visual_grids(self, grids: Sequence[Grid], seconds: torch.Tensor | None = None) -> list[VisualGrid]:
        merge = self.vision_encoder.config.merge_size if grids else 1
        steps = [1.0] * len(grids) if seconds is None else [float(s) for s in seconds.reshape(-1).tolist()]
        return [VisualGrid.from_patch_grid(g, merge, s) for g, s in zip(grids, steps)]

    def _positions(
        self, prompt: CheckedPrompt, *, images: Sequence[Grid], videos: Sequence[Grid],
        video_seconds: torch.Tensor | None, audio_tokens: torch.Tensor | None, use_audio_in_video: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TMRoPE ids ``(3, B, T)`` and ``next_position (B,)`` (:func:`checked_position_ids`) of the checked prompt
        from the patch grids (host ints), the videos' seconds per step ``(n_video,)`` and the audio items' token
        counts ``(n_audio,)``, without host reads; with ``use_audio_in_video`` the soundtracks are found on the
        host (eager only)."""
        if use_audio_in_video:
            return self._positions_with_soundtracks(prompt, images, videos, video_seconds, audio_tokens)
        merge = self.vision_encoder.config.merge_size if videos else 1
        video_items = ItemTable.patch_grids(videos, merge, video_seconds, device=prompt.input_ids.device)
        items = {"images": self._visual_grids(images), "videos": video_items,
                 "audios": () if audio_tokens is None else audio_tokens}
        # no host read: the grids are ints, seconds and audio counts stay tensors
        return checked_position_ids(prompt.modality_ids, items, self.scheme, prompt.key_padding_mask)

    def prompt_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
        image_grid_thw: PatchGrids | None = None, video_grid_thw: PatchGrids | None = None,
        video_second_per_grid: torch.Tensor | None = None, audio_tokens: torch.Tensor | None = None,
        use_audio_in_video: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TMRoPE ids ``(3, B, T)`` and ``next_position (B,)`` of ``input_ids`` whose media are given by their
        patch grids and audio token counts ``(n_audio,)`` (nothing is encoded): the positions a model that reads
        the same prompt layout with this Thinker's placeholders and scheme uses (a Talker's prompt)."""
        check_tensor(input_ids, "input_ids", ndim=2, floating=False)
        if attention_mask is not None:
            check_tensor(attention_mask, "attention_mask", shape=tuple(input_ids.shape))
        padding = None if attention_mask is None else attention_mask.to(input_ids.device).bool()
        return self._positions(
            CheckedPrompt(input_ids, padding, self.text_model.media_tokens),
            images=() if image_grid_thw is None else grid_list(image_grid_thw, "image_grid_thw"),
            videos=() if video_grid_thw is None else grid_list(video_grid_thw, "video_grid_thw"),
            video_seconds=video_second_per_grid, audio_tokens=audio_tokens, use_audio_in_video=use_audio_in_video,
        )

    def _positions_with_soundtracks(
        self, prompt: CheckedPrompt, images: Sequence[Grid], videos: Sequence[Grid],
        video_seconds: torch.Tensor | None, audio_tokens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_positions` when the videos' soundtracks are interleaved with them: the audio items inside
        video runs of ``input_ids`` go to their videos, the others stay standalone (read on the host)."""
        counts = [] if audio_tokens is None else audio_tokens.tolist()
        video_grids = self._visual_grids(videos, video_seconds)
        in_video = audio_in_video_items(prompt.modality_ids, prompt.key_padding_mask)
        if len(in_video) != len(counts):
            raise OmnikitValueError(
                f"`input_ids` holds {len(in_video)} audio items but `input_features` has {len(counts)}"
            )
        tracks = [n for n, inside in zip(counts, in_video) if inside]
        if len(tracks) != len(video_grids):
            raise OmnikitValueError(
                f"use_audio_in_video: {len(video_grids)} videos but {len(tracks)} audio tracks inside video items"
            )
        standalone = [n for n, inside in zip(counts, in_video) if not inside]
        video_grids = [VisualGrid(g.t, g.h, g.w, g.seconds_per_step, n) for g, n in zip(video_grids, tracks)]
        items = {"images": self._visual_grids(images), "videos": video_grids, "audios": standalone}
        return checked_position_ids(prompt.modality_ids, items, self.scheme, prompt.key_padding_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, return_hidden: bool = False,
        **inputs,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, vocab)`` (and the final hidden states ``(B, T, D)`` with ``return_hidden``);
        ``inputs`` are the media keywords of :meth:`fuse`. Under context parallel: the whole prompt in,
        this rank's ``T / cp`` positions out (:func:`~omnikit.distributed.cp.cp_positions`)."""
        fused = self.fuse(input_ids, attention_mask, **inputs)
        if self.context_parallel is not None:
            placeholders = self.text_model.media_tokens.as_dict()
            input_ids, fused = self.context_parallel.shard_fused(input_ids, fused, placeholders)
        return fused.with_absent(self.text_model(input_ids, media=fused.media, positions=fused.positions,
                                                 key_padding_mask=fused.key_padding_mask, return_hidden=return_hidden))

    def stream_generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, max_new_tokens: int = 32,
        **inputs,
    ) -> Iterator[ThinkerStep]:
        """Yield one :class:`ThinkerStep` per generated token (see :meth:`Thinker.stream_generate`);
        ``sampling``, ``eos_token_id``, ``generator``, ``cache``, ``max_len`` and ``compile`` pass through,
        the rest are :meth:`fuse` keywords."""
        decoding = ("sampling", "eos_token_id", "generator", "cache", "max_len", "compile")
        passed = {k: inputs.pop(k) for k in decoding if k in inputs}
        fused = self.fuse(input_ids, attention_mask, **inputs)
        yield from self.text_model.stream_generate(
            input_ids, media=fused.media, positions=fused.positions, next_position=fused.next_position,
            key_padding_mask=fused.key_padding_mask, max_new_tokens=max_new_tokens, **passed,
        )

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> GenerationOutput:
        """Run :meth:`stream_generate` to the end (``.tokens (B, N)`` are the new tokens)."""
        return GenerationOutput.stack(list(self.stream_generate(input_ids, attention_mask, **kwargs)))
