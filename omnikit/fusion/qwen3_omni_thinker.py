"""The Qwen3-Omni Thinker: an :class:`OmniThinker` whose vision tower feeds deepstack features to its LM.

Same inputs as :class:`OmniThinker` (what the Qwen3-Omni processor returns); the vision tower is a
:class:`~omnikit.vision.Qwen3ViT` and the language model a :class:`DeepstackThinker`: the merged
visual tokens are scattered at their placeholders and each deepstack level is added at those
positions after the matching early decoder layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from omnikit.fusion.deepstack_thinker import DeepstackThinker
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.tmrope import TMRoPEScheme
from omnikit.utils.checks import OmnikitTypeError
from omnikit.vision.patch_grids import Grid
from omnikit.vision.qwen3_vit import DeepstackOutput, Qwen3ViT

__all__ = ["Qwen3OmniThinker"]


class Qwen3OmniThinker(OmniThinker):
    """Processor inputs -> logits ``(B, T, vocab)``; see :class:`OmniThinker` for the arguments."""

    def __init__(
        self,
        text_model: DeepstackThinker,
        *,
        audio_encoder: nn.Module | None,
        vision_encoder: Qwen3ViT | None,
        scheme: TMRoPEScheme,
        marker_tokens: Mapping[str, int] | None = None,
    ) -> None:
        if not isinstance(text_model, DeepstackThinker):
            raise OmnikitTypeError(f"`text_model` expected a DeepstackThinker but got {type(text_model).__name__}")
        if vision_encoder is not None and not isinstance(vision_encoder, Qwen3ViT):
            raise OmnikitTypeError(f"`vision_encoder` expected a Qwen3ViT but got {type(vision_encoder).__name__}")
        super().__init__(text_model, audio_encoder=audio_encoder, vision_encoder=vision_encoder, scheme=scheme,
                         marker_tokens=marker_tokens)

    def _visual(self, pixels: torch.Tensor, grids: Sequence[Grid]) -> DeepstackOutput:
        """The merged tokens of all items as one :class:`DeepstackOutput` item, deepstack features attached."""
        out = super()._visual(pixels, grids)
        count = torch.tensor([out.hidden_states.shape[0]], device=out.hidden_states.device)
        return DeepstackOutput(out.hidden_states[None], count, [d[None] for d in out.deepstack])
