"""``FrameEncoder``: any timm image backbone applied to every frame of a batch of clips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    OmnikitTypeError,
    OmnikitValueError,
    check_choice,
    check_finite,
    check_lengths_or_full,
    check_tensor,
)
from omnikit.utils.deps import require
from omnikit.vision.merger import PatchMerger
from omnikit.vision.tome_vit import check_tome_backbone, tome_forward_features

__all__ = ["POOLS", "FrameEncoder"]

#: Per-frame pooling of :class:`FrameEncoder`: keep all tokens, the first prefix (CLS) token, or the patch mean.
POOLS: tuple[str, ...] = ("none", "cls", "mean")


def _build_backbone(
    backbone: str | nn.Module, pretrained: bool, checkpoint_path: str | Path | None, kwargs: dict[str, Any]
) -> nn.Module:
    if isinstance(backbone, nn.Module):
        if pretrained or checkpoint_path is not None or kwargs:
            raise OmnikitValueError("`pretrained`, `checkpoint_path` and backbone kwargs need a backbone *name*")
        if not callable(getattr(backbone, "forward_features", None)):
            raise OmnikitTypeError(f"`backbone` expected a timm model with forward_features but got {type(backbone)}")
        return backbone
    if not isinstance(backbone, str):
        raise OmnikitTypeError(f"`backbone` expected a timm model name or nn.Module but got {type(backbone).__name__}")
    timm = require("timm")
    if checkpoint_path is not None:
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"`checkpoint_path`: no weights file at {str(checkpoint_path)!r}")
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(checkpoint_path)}}
        pretrained = True
    try:
        return timm.create_model(backbone, pretrained=pretrained, num_classes=0, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            close = timm.list_models(f"*{backbone.split('_')[0]}*")[:5]
            raise OmnikitValueError(f"`backbone`: timm has no model {backbone!r} (similar: {close})") from err
        raise


def _keep_norms_fp32(backbone: nn.Module) -> None:
    """Mark the backbone's norm layers ``keep_fp32`` so ``create_model(dtype=bf16)`` leaves them in
    float32 (layer norm accepts low-precision inputs with float32 weights and returns the input dtype)."""
    for module in backbone.modules():
        if type(module).__name__.lower().endswith("norm") or isinstance(module, nn.LayerNorm):
            module.keep_fp32 = True


#: the largest |value| a normalised frame may hold (ImageNet-normalised pixels lie within about 2.7; raw
#: 0-255 values far beyond), checked in eager mode so unnormalised frames are refused, not encoded
MAX_NORMALISED = 64.0


class FrameEncoder(nn.Module):
    """Encode every frame of ``(B, T, C, H, W)`` clips with a timm backbone's ``forward_features``.

    Valid frames of all clips are gathered into one batch (padding frames are never encoded),
    run through the backbone ``frame_batch_size`` at a time, and scattered back.

    Args:
        backbone: a timm model name or an instantiated timm model.
        pretrained: load timm's pretrained weights (downloads unless ``checkpoint_path`` is given).
        checkpoint_path: a local timm weights file (``.safetensors``/``.pth``) loaded through
            ``pretrained_cfg_overlay=dict(file=...)``; implies ``pretrained``.
        merge_size: merge ``m x m`` neighbouring patch tokens (Qwen2-VL merger); drops prefix
            tokens; needs ``out_dim``.
        pool: ``"none"`` (all tokens), ``"cls"`` (the first prefix token) or ``"mean"``
            (mean of patch tokens): one token per frame.
        out_dim: project to this width (a decoder's), through the merger or a linear layer.
        tome_r: merge this many patch tokens in every block of a timm ViT (ToMe, see
            :func:`~omnikit.vision.tome_vit.tome_forward_features`): ``num_patches - depth * r``
            patch tokens per frame, and ``pool="mean"`` weights each by the patches it covers.
            ``0``: no merging.
        flatten: return ``(B, T*N, D)`` (lengths in tokens) instead of ``(B, T, N, D)``
            (lengths in frames).
        frame_batch_size: frames per backbone call (``None``: all at once).
        **backbone_kwargs: passed to ``timm.create_model`` (``img_size``, ``dynamic_img_size`` ...).

    With no merger, pooling or projection the hidden states are exactly the backbone's
    ``forward_features`` tokens of every frame (a convnet's ``(C, h, w)`` map as ``h*w`` tokens).
    Inputs are used as given: :meth:`preprocess` turns uint8 frames into the backbone's
    normalised input.
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        *,
        pretrained: bool = False,
        checkpoint_path: str | Path | None = None,
        merge_size: int | None = None,
        pool: str = "none",
        out_dim: int | None = None,
        flatten: bool = True,
        frame_batch_size: int | None = None,
        tome_r: int = 0,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        check_choice(pool, "pool", POOLS)
        if merge_size is not None and (pool != "none" or out_dim is None):
            raise OmnikitValueError("`merge_size` needs pool='none' and an `out_dim` for the merger's projection")
        if frame_batch_size is not None and frame_batch_size < 1:
            raise OmnikitValueError(f"`frame_batch_size` expected a positive int or None but got {frame_batch_size}")
        if merge_size is not None and tome_r:
            raise OmnikitValueError("`merge_size` needs every patch of the grid; it cannot follow `tome_r` merging")
        self.backbone = _build_backbone(backbone, pretrained, checkpoint_path, backbone_kwargs)
        check_tome_backbone(self.backbone, tome_r)
        self.tome_r = tome_r
        _keep_norms_fp32(self.backbone)
        self.feature_dim = int(self.backbone.num_features)
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        if pool == "cls" and self.num_prefix_tokens == 0:
            raise OmnikitValueError(f"`pool`='cls' but {type(self.backbone).__name__} has no prefix (CLS) token")
        self.pool, self.flatten, self.frame_batch_size = pool, flatten, frame_batch_size
        self.merger = PatchMerger(self.feature_dim, out_dim, merge_size) if merge_size is not None else None
        use_proj = out_dim is not None and self.merger is None
        self.proj = nn.Linear(self.feature_dim, out_dim) if use_proj else None
        self.output_dim = out_dim or self.feature_dim
        self._tokens_per_frame: dict[tuple[int, ...], int] = {}

    # ----------------------------------------------------------------- geometry
    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the backbone was configured for."""
        size = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
        if size is None:
            size = self.backbone.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
        return int(size[0]), int(size[1])

    def _patch_grid(self, height: int, width: int, num_tokens: int) -> tuple[int, int]:
        patch = getattr(getattr(self.backbone, "patch_embed", None), "patch_size", None)
        grid = (height // patch[0], width // patch[1]) if patch is not None else None
        if grid is None or grid[0] * grid[1] != num_tokens - self.num_prefix_tokens:
            raise OmnikitValueError(
                f"cannot lay the {num_tokens} tokens of {type(self.backbone).__name__} out on a patch grid "
                f"for {height}x{width} frames; merge_size needs a ViT-style backbone with patch_embed"
            )
        return grid

    def tokens_per_frame(self, size: tuple[int, int] | None = None) -> int:
        """Output tokens per frame of ``size = (H, W)`` (default :attr:`input_size`), found by encoding
        one blank frame in eval mode (cached)."""
        size = tuple(size or self.input_size)
        if size not in self._tokens_per_frame:
            was_training = self.training
            self.eval()
            try:
                param = next(self.parameters())
                with torch.no_grad():
                    blank = torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype)
                    self._tokens_per_frame[size] = int(self._encode(blank).shape[1])
            finally:
                self.train(was_training)
        return self._tokens_per_frame[size]

    def output_lengths(self, lengths: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Valid output positions for clips of ``lengths`` frames of ``size``: tokens (``flatten``) or frames."""
        return lengths * self.tokens_per_frame(size) if self.flatten else lengths

    # ----------------------------------------------------------------- compute
    def _features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, C, H, W) -> (N, tokens, feature_dim)`` backbone features of a batch of frames, and
        ``(N, tokens)`` the patches each token covers under ToMe (``None`` without)."""
        if self.tome_r:
            merged = tome_forward_features(self.backbone, frames, self.tome_r)
            return merged.tokens, merged.sizes
        out = self.backbone.forward_features(frames)
        if out.ndim == 4:  # a feature map: NCHW (convnets) or NHWC (Swin)
            if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
                return out.flatten(1, 2), None
            return out.flatten(2).transpose(1, 2), None
        if out.ndim != 3:
            raise OmnikitValueError(f"`backbone`.forward_features returned a {out.ndim}-D tensor; expected 3-D or 4-D")
        return out, None

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, N_out, output_dim)``."""
        tokens, sizes = self._features(frames)
        if self.merger is not None:
            h, w = self._patch_grid(frames.shape[-2], frames.shape[-1], tokens.shape[1])
            patches = tokens[:, self.num_prefix_tokens :].reshape(tokens.shape[0], h, w, -1)
            return self.merger(patches)
        if self.pool == "cls":
            tokens = tokens[:, :1]
        elif self.pool == "mean":
            patches = tokens[:, self.num_prefix_tokens :]
            if sizes is None:
                tokens = patches.mean(dim=1, keepdim=True)
            else:
                weights = sizes[:, self.num_prefix_tokens :, None].to(patches.dtype)
                tokens = (patches * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True)
        return self.proj(tokens) if self.proj is not None else tokens

    @property
    def frames_per_step(self) -> int:
        """One: every frame is encoded on its own (so a video streamed in windows gives one pass's tokens)."""
        return 1

    @property
    def gradient_checkpointing(self) -> bool:
        """Recompute the backbone's blocks in backward (timm's ``set_grad_checkpointing``)."""
        return bool(getattr(self.backbone, "grad_checkpointing", False))

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        self.backbone.set_grad_checkpointing(enabled)

    def _check_frames(self, frames: torch.Tensor) -> None:
        """What timm would reject with an internal message: frame count, channels, size, dtype."""
        if frames.shape[1] == 0:
            raise OmnikitValueError(f"`frames` expected at least one frame per clip but got {tuple(frames.shape)}")
        embed = getattr(self.backbone, "patch_embed", None)
        proj = getattr(embed, "proj", None)
        channels = getattr(proj, "in_channels", None)
        if channels is not None and frames.shape[2] != channels:
            raise OmnikitValueError(f"`frames` expected {channels} channels (B, T, {channels}, H, W) but got "
                                    f"{tuple(frames.shape)}")
        height, width = frames.shape[-2:]
        if getattr(embed, "strict_img_size", False) and (height, width) != tuple(embed.img_size):
            raise OmnikitValueError(f"`frames` expected {tuple(embed.img_size)} pixels (the backbone's fixed input "
                                    f"size; resize with .preprocess) but got {height}x{width}")
        patch = getattr(embed, "patch_size", None)
        if patch is not None and (height % patch[0] or width % patch[1]):
            raise OmnikitValueError(f"`frames` expected H and W multiples of the patch {tuple(patch)} but got "
                                    f"{height}x{width}")
        weight = next(self.backbone.parameters(), None)
        if weight is not None and frames.dtype != weight.dtype and not torch.is_autocast_enabled(frames.device.type):
            raise OmnikitTypeError(f"`frames` expected dtype {weight.dtype} (the backbone's weights) but got "
                                   f"{frames.dtype}; cast the frames or the model")

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Args:
            frames: ``(B, T, C, H, W)`` float, already normalised for the backbone.
            lengths: ``(B,)`` valid frames per clip (padding at the end); ``None``: all valid.

        Returns:
            :class:`EncoderOutput` with ``hidden_states`` ``(B, T*N, D)`` and ``lengths`` in tokens
            (``flatten=True``), or ``(B, T, N, D)`` and ``lengths`` in frames; padding zeroed.
        """
        check_tensor(frames, "frames", shape=("B", "T", "C", "H", "W"), floating=True)
        self._check_frames(frames)
        batch, length = frames.shape[:2]
        eager = not torch.compiler.is_compiling()  # traced code selects no frames by value
        padded = lengths is not None
        lengths = check_lengths_or_full(lengths, frames, of="frames")
        if not padded:
            valid = frames.flatten(0, 1)
            mask = None
        else:
            mask = torch.arange(length, device=frames.device)[None, :] < lengths[:, None]
            valid = frames[mask] if eager else frames.masked_fill(~mask[:, :, None, None, None], 0).flatten(0, 1)
        check_finite(valid, "frames", "in valid frames")
        if eager and valid.numel() and float(valid.abs().amax()) > MAX_NORMALISED:
            raise OmnikitValueError(
                f"`frames` expected values normalised for the backbone (|x| <= {MAX_NORMALISED:g}) but got values up "
                f"to {float(valid.abs().amax()):g}, like raw 0-255 pixels; pass uint8 frames through .preprocess"
            )
        step = self.frame_batch_size or valid.shape[0]
        encoded = torch.cat([self._encode(chunk) for chunk in valid.split(step)])
        if mask is None or not eager:  # traced: every frame encoded (fixed shapes), padding zeroed after
            tokens = encoded.view(batch, length, *encoded.shape[1:])
            if mask is not None:
                tokens = tokens.masked_fill(~mask.view(batch, length, *[1] * (tokens.ndim - 2)), 0)
        else:
            tokens = encoded.new_zeros(batch, length, *encoded.shape[1:])
            tokens[mask] = encoded
        if not self.flatten:
            return EncoderOutput(tokens, lengths)
        per_frame = tokens.shape[2]
        return EncoderOutput(tokens.flatten(1, 2), lengths * per_frame)

    # ----------------------------------------------------------------- inputs
    def preprocess(self, frames: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 ``(..., C, H, W)`` frames -> float, resized to ``size`` (default the backbone's input
        size, bilinear with antialiasing) and normalised with the backbone's mean and std."""
        check_tensor(frames, "frames", ndim=(4, 5), dtype=torch.uint8)
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:]).float().div_(255.0)
        size = size or self.input_size
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        cfg = self.backbone.pretrained_cfg
        mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1)
        return ((x - mean) / std).reshape(*lead, x.shape[1], *size)

    # ----------------------------------------------------------------- contract
    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        frames = torch.randn(len(lengths), max(lengths), 3, *self.input_size, generator=g)
        lens = torch.tensor(list(lengths))
        return ContractInputs({"frames": frames, "lengths": lens}, lens, {"frames": 1}, "lengths")
