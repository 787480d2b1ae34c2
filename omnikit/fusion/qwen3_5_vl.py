"""Qwen3.5 vision-language: a Qwen3-VL-style vision tower (no deepstack) feeding a hybrid Thinker.

The structure of transformers' ``Qwen3_5ForConditionalGeneration`` / ``Qwen3_5MoeForConditionalGeneration``:
a :class:`~omnikit.vision.Qwen3ViT` built without deepstack mergers encodes ``pixel_values`` /
``pixel_values_videos``; its merged tokens are scattered at the image / video placeholders of a
:class:`~omnikit.fusion.Thinker` whose decoder is a :class:`~omnikit.layers.hybrid.HybridDecoder`
(Gated DeltaNet and gated full attention, interleaved M-RoPE on the partial rotary dims).

Positions (transformers' ``get_rope_index``): text advances ``t``, ``h`` and ``w`` together; an image of
``h x w`` merged tokens gets ``(start, start + row, start + col)`` and the text after it continues at
``start + max(h, w)``. A video of ``t`` steps is ``t`` such items, one per temporal step (its processor
writes a timestamp between the steps), so every step's temporal id is its own start. An image whose
patch grid has several temporal steps (the processor never writes one) would continue at ``start +
max(t, h, w)`` here, transformers at ``start + max(h, w)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from omnikit.fusion.boundary import CheckedPrompt
from omnikit.fusion.qwen3_5_omni import HybridOmniThinker, check_hybrid_thinker
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import TMRoPEScheme
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.vision.patch_grids import Grid
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = ["Qwen3_5VL", "qwen3_5_scheme"]


def qwen3_5_scheme(sections: Sequence[int]) -> TMRoPEScheme:
    """The position scheme of Qwen3.5: interleaved M-RoPE ``sections`` (on the rotary dims), every visual
    item one temporal step (its temporal ids are all its start), no audio."""
    return TMRoPEScheme(seconds_per_chunk=None, shared_av_markers=False, sections=tuple(sections), interleaved=True)


class Qwen3_5VL(HybridOmniThinker):
    """Processor inputs (``input_ids``, ``attention_mask``, ``pixel_values`` + ``image_grid_thw``,
    ``pixel_values_videos`` + ``video_grid_thw``) -> logits ``(B, T, vocab)``.

    Args:
        text_model: a :class:`Thinker` on a hybrid decoder with interleaved ``mrope_sections``.
        vision_encoder: a :class:`Qwen3ViT` without deepstack mergers whose ``out_dim`` is the text width.
        marker_tokens: ``vision_start_token_id`` / ``vision_end_token_id`` (kept for the config).
    """

    def __init__(self, text_model: Thinker, *, vision_encoder: Qwen3ViT,
                 marker_tokens: Mapping[str, int] | None = None) -> None:
        check_hybrid_thinker(text_model)
        if not isinstance(vision_encoder, Qwen3ViT):
            raise OmnikitTypeError(f"`vision_encoder` expected a Qwen3ViT but got {type(vision_encoder).__name__}")
        if vision_encoder.config.out_dim != text_model.config.dim:
            raise OmnikitValueError(
                f"`vision_encoder.config.out_dim` expected the text width {text_model.config.dim} but got "
                f"{vision_encoder.config.out_dim}"
            )
        if not text_model.config.mrope_interleaved or text_model.config.mrope_sections is None:
            raise OmnikitValueError("`text_model` expected interleaved M-RoPE (mrope_sections, mrope_interleaved)")
        super().__init__(text_model, audio_encoder=None, vision_encoder=vision_encoder,
                         scheme=qwen3_5_scheme(text_model.config.mrope_sections), marker_tokens=marker_tokens)

    def _positions(
        self, prompt: CheckedPrompt, *, images: Sequence[Grid], videos: Sequence[Grid],
        video_seconds: torch.Tensor | None, audio_tokens: torch.Tensor | None, use_audio_in_video: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`OmniThinker._positions` with every video step an item of its own (seconds unused)."""
        if use_audio_in_video:
            raise OmnikitValueError("use_audio_in_video=True but a Qwen3.5 model has no audio")
        steps = [(1, h, w) for t, h, w in videos for _ in range(t)]
        return super()._positions(prompt, images=images, videos=steps, video_seconds=None,
                                  audio_tokens=audio_tokens, use_audio_in_video=False)
