"""Media adapters: an encoder plus a projector into the language model's width, with token layout.

An adapter turns raw media of one modality into the flat token list early fusion scatters in,
and says how those tokens are laid out (for TMRoPE):

- :class:`AudioAdapter` wraps any audio encoder with the omnikit calling convention
  (``forward(features, lengths) -> EncoderOutput`` and ``output_lengths``);
- :class:`VideoAdapter` wraps a visual encoder that maps frames ``(N, T, C, H, W)`` to a
  ``(t, h, w)`` token grid; :class:`TubeletEncoder` is a minimal one (the vision family's
  tubelet embedding plus an MLP) used by the tiny presets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.audio.blocks import check_features
from omnikit.fusion.tmrope import VisualGrid
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.norm import LayerNorm
from omnikit.layers.positions import GridPositionEmbedding, grid_sincos
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_input, check_positive, check_tensor
from omnikit.vision.tubelet import TubeletEmbed

__all__ = ["AdaptedMedia", "AudioAdapter", "MLPProjector", "ResampledAdapter", "TubeletEncoder", "VideoAdapter",
           "mlp_projector"]


@dataclass
class AdaptedMedia:
    """What an adapter gives early fusion.

    Attributes:
        media: the tokens as early fusion places them: ``(N, dim)`` valid tokens of all items, item
            after item, or an :class:`EncoderOutput` ``(items, L, dim)`` with the valid count of each
            item (placed by a gather, without reading the counts on the host).
        items: per item, an audio token count or a :class:`VisualGrid` (audio counts may be an
            ``(items,)`` tensor).
    """

    media: torch.Tensor | EncoderOutput
    items: list | torch.Tensor

    @property
    def tokens(self) -> torch.Tensor:
        """``(N, dim)`` valid tokens of all items, item after item (a host read of padded media's counts)."""
        return torch.cat(self.media.unpad()) if isinstance(self.media, EncoderOutput) else self.media


class MLPProjector(nn.Sequential):
    """LLaVA-style projector ``Linear -> GELU -> Linear``: ``(..., in_dim) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.in_dim, self.output_dim = in_dim, out_dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` finite tokens in the weights' dtype -> ``(..., out_dim)``."""
        x = check_input(input, "input", self, ndim=range(1, 8))
        if x.shape[-1] != self.in_dim:
            raise OmnikitValueError(f"`input` expected shape (..., {self.in_dim}) but got {tuple(x.shape)}")
        return super().forward(x)

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module} (see :func:`omnikit.fusion.parameter_groups`): an adapter."""
        return {"adapters": self}

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Token batches ``(B, max(lengths), in_dim)``, zero padded."""
        g = torch.Generator().manual_seed(seed)
        n = torch.tensor(list(lengths))
        x = torch.randn(len(n), int(n.max()), self.in_dim, generator=g) * lengths_to_mask(n, int(n.max()))[..., None]
        return ContractInputs({"input": x}, n, {"input": 1})


def mlp_projector(in_dim: int, out_dim: int) -> MLPProjector:
    """LLaVA-style projector ``Linear -> GELU -> Linear``: ``(..., in_dim) -> (..., out_dim)``."""
    return MLPProjector(in_dim, out_dim)


class ResampledAdapter(nn.Module):
    """A resampler (Q-Former, Perceiver) then an MLP projector to the language model width (Video-LLaMA,
    Flamingo-style media adapters): ``tokens (B, N, D)``, ``lengths (B,)`` -> :class:`EncoderOutput`
    ``(B, latents, dim)``.

    Args:
        resampler: a temporal module ``forward(tokens, lengths) -> EncoderOutput`` with ``output_dim``
            and ``contract_inputs`` (:class:`~omnikit.video.QFormer`, :class:`~omnikit.video.PerceiverResampler`).
        dim: the language model width.
    """

    def __init__(self, resampler: nn.Module, dim: int) -> None:
        super().__init__()
        self.resampler = resampler
        self.projector = mlp_projector(resampler.output_dim, dim)
        self.output_dim = dim

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module} (see :func:`omnikit.fusion.parameter_groups`): an adapter."""
        return {"adapters": self}

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        out = self.resampler(tokens, lengths)
        return EncoderOutput(self.projector(out.hidden_states), out.lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return self.resampler.contract_inputs(lengths, seed=seed)


def _projector(in_dim: int, dim: int, project: bool) -> nn.Module:
    if project:
        return mlp_projector(in_dim, dim)
    if in_dim != dim:
        raise OmnikitValueError(f"`project=False` needs the encoder to output width {dim} but it gives {in_dim}")
    return nn.Identity()


class _Adapter(nn.Module):
    """An encoder plus a projector: the adapter's own parameters train as ``adapters``, its encoder's
    as ``encoders`` (see :func:`omnikit.fusion.parameter_groups`).

    ``forward(media, lengths=None) -> AdaptedMedia``; :meth:`example` makes small random inputs
    and :meth:`fixed_example` the input of a run on absent media (:mod:`omnikit.fusion.absent`).
    """

    encoder: nn.Module

    def fusion_groups(self) -> dict[str, nn.Module]:
        """{recipe group: module}, later entries overriding earlier ones."""
        return {"adapters": self, "encoders": self.encoder}

    def example(
        self, batch: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(media, lengths)`` of ``batch`` small random items (None: no example for this encoder)."""
        raise NotImplementedError

    def fixed_example(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One small item made without the global RNG (:meth:`example` with a fixed generator)."""
        return self.example(1, generator=torch.Generator().manual_seed(0))


class AudioAdapter(_Adapter):
    """``features (N, n_mels, F)``, ``lengths (N,)`` -> :class:`AdaptedMedia` of width ``dim``: the
    projected encoder output, padded per item, and the token counts ``(N,)`` (a tensor: no host read).

    ``project=False``: the encoder already ends in a projection to ``dim`` (Qwen's audio towers).

    ``time_embedding=True`` adds to every encoder token, before the projector, the time part of the
    3-D sin-cos embedding of :class:`VideoAdapter` (grid place ``(t, 0, 0)``, ``t`` the token's time in
    ``ids_per_second`` units), so tokens carry absolute time even where the encoder's own positions
    restart per window. Off by default (published towers stay exact).
    """

    def __init__(
        self, encoder: nn.Module, dim: int, *, project: bool = True, time_embedding: bool = False,
        tokens_per_second: float = 25.0, ids_per_second: float = 25.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = _projector(encoder.output_dim, dim, project)
        self.time_embedding = time_embedding
        self.time_step = ids_per_second / tokens_per_second

    def check_inputs(
        self, features: torch.Tensor, lengths: torch.Tensor | None, names: tuple[str, str] = ("features", "lengths")
    ) -> None:
        """Validate ``features (N, n_mels, L)`` and ``lengths (N,)``; errors name the caller's ``names``."""
        n_mels = getattr(getattr(self.encoder, "config", None), "n_mels", "n_mels")  # a size, or any
        check_features(features, lengths, n_mels, *names)

    def example(self, batch: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``features (batch, n_mels, 8)`` random, ``lengths (batch,)`` all 8."""
        return torch.randn(batch, self.encoder.config.n_mels, 8, generator=generator), torch.full((batch,), 8)

    def fixed_example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's own contract input (eight mel frames) where it declares one."""
        if hasattr(self.encoder, "contract_inputs"):
            features = self.encoder.contract_inputs([8]).kwargs["features"]
            return features, torch.full((1,), features.shape[-1])
        return super().fixed_example()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> AdaptedMedia:
        out = self.encoder(features, lengths)
        hidden = out.hidden_states
        if self.time_embedding:
            hidden = hidden + self.times(hidden.shape[1], hidden.shape[-1]).to(hidden)
        tokens = torch.where(out.mask[..., None], self.projector(hidden), 0.0)  # padding stays zero
        return AdaptedMedia(EncoderOutput(tokens, out.lengths), out.lengths)

    def times(self, count: int, width: int) -> torch.Tensor:
        """``(count, width)`` embedding of the times ``0, s, 2s, ...`` (``s = ids_per_second / tokens_per_second``)."""
        return grid_sincos(torch.arange(count) * self.time_step, 1, 1, width).view(count, width)


class TubeletEncoder(nn.Module):
    """Frames ``(N, T, C, H, W)`` -> tokens ``(N, t, h, w, dim)``: the vision family's
    :class:`~omnikit.vision.TubeletEmbed` over ``(tubelet, patch, patch)`` tubelets (ViViT) and a small
    residual MLP; no attention (for a full video ViT use :class:`~omnikit.vision.VideoViT`).

    ``t = T // tubelet``, ``h = H // patch``, ``w = W // patch``. ``pos_embed``: ``None`` (the default),
    ``"sincos"`` or ``"learned"``: a (t, h, w) position embedding added after the tubelet embedding
    (:class:`~omnikit.layers.positions.GridPositionEmbedding`; ``max_grid`` bounds the learned tables).
    """

    def __init__(
        self, dim: int, *, in_channels: int = 3, patch: int = 4, tubelet: int = 2, pos_embed: str | None = None,
        max_grid: tuple[int, int, int] = (64, 64, 64),
    ) -> None:
        super().__init__()
        check_positive(patch, "patch")
        check_positive(tubelet, "tubelet")
        self.patch, self.tubelet, self.in_channels, self.output_dim = patch, tubelet, in_channels, dim
        self.embed = TubeletEmbed(dim, (tubelet, patch, patch), in_channels, bias=True)
        self.pos_embed = None if pos_embed is None else GridPositionEmbedding(dim, pos_embed, max_grid=max_grid)
        self.mlp = nn.Sequential(LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def grid(self, frames_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        if len(frames_shape) != 5:
            raise OmnikitValueError(f"`frames` expected a 5-D shape (N, T, C, H, W) but got {tuple(frames_shape)}")
        _, t, _, h, w = frames_shape
        if t % self.tubelet or h % self.patch or w % self.patch:
            raise OmnikitValueError(
                f"`frames` of shape {tuple(frames_shape)} expected T divisible by {self.tubelet} and H, W by "
                f"{self.patch}"
            )
        return t // self.tubelet, h // self.patch, w // self.patch

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        check_tensor(frames, "frames", shape=("N", "T", self.in_channels, "H", "W"), floating=True)
        self.grid(frames.shape)
        x = self.embed(frames)  # (N, t, h, w, dim)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        return x + self.mlp(x)


class VideoAdapter(_Adapter):
    """Frames ``(N, T, C, H, W)`` -> :class:`AdaptedMedia` of width ``dim`` with one grid per video.

    Args:
        encoder: maps frames to ``(N, t, h, w, D)`` (or an :class:`EncoderOutput` ``(N, t*h*w, D)``)
            and has ``output_dim``.
        dim: the language model width.
        fps: frames per second of the sampled frames (sets the grid's seconds per step).
        project: add an MLP projector (False: the encoder already outputs ``dim``).
        grid: ``frames.shape -> (t, h, w)`` token grid (default ``encoder.grid``).
        frames_per_step: frames per temporal token (default ``encoder.tubelet``).
        position_embedding: add a 3-D sin-cos (t, h, w) embedding to the encoder's tokens before the
            projector, ``t`` in seconds times ``ids_per_second`` (TMRoPE's time unit, shared with
            :class:`AudioAdapter`'s ``time_embedding``); for towers without positions of their own.
            Off by default.
    """

    def __init__(
        self, encoder: nn.Module, dim: int, *, fps: float = 2.0, project: bool = True,
        grid: Callable[[tuple[int, ...]], tuple[int, int, int]] | None = None, frames_per_step: int | None = None,
        position_embedding: bool = False, ids_per_second: float = 25.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.grid = grid or encoder.grid
        self.frames_per_step = frames_per_step or encoder.tubelet
        self.fps, self.dim = fps, dim
        self.projector = _projector(encoder.output_dim, dim, project)
        self.position_embedding, self.ids_per_second = position_embedding, ids_per_second

    def example(
        self, batch: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, None] | None:
        """Frames ``(batch, tubelet, C, 2p, 2p)``: one tubelet step of 2x2 patches (tubelet encoders only,
        else None)."""
        enc = self.encoder
        if not hasattr(enc, "tubelet"):
            return None
        return torch.randn(batch, enc.tubelet, enc.in_channels, 2 * enc.patch, 2 * enc.patch, generator=generator), None

    def fixed_example(self) -> tuple[torch.Tensor, None]:
        """The encoder's own contract input (one frame) where it declares one."""
        if hasattr(self.encoder, "contract_inputs"):
            return self.encoder.contract_inputs([1]).kwargs["frames"], None
        return super().fixed_example()

    def forward(
        self, frames: torch.Tensor, lengths: None = None, *, audio_tokens: list[int] | None = None
    ) -> AdaptedMedia:
        """``audio_tokens``: per video, tokens of its own audio interleaved with it (audio in video).
        ``lengths``: must be None (the videos of a call have equal frame counts)."""
        if lengths is not None:
            raise OmnikitValueError("video `lengths` are not supported: the videos of a call share one frame count")
        t, h, w = self.grid(frames.shape)
        out = self.encoder(frames)
        out = out.hidden_states if isinstance(out, EncoderOutput) else out
        step = self.frames_per_step / self.fps
        if self.position_embedding:
            pos = grid_sincos(torch.arange(t, device=out.device) * (step * self.ids_per_second), h, w, out.shape[-1])
            out = out + pos.reshape(out.shape[1:]).to(out.dtype)
        tokens = self.projector(out).reshape(-1, self.dim)
        audio = audio_tokens or [0] * frames.shape[0]
        if len(audio) != frames.shape[0]:
            raise OmnikitValueError(
                f"`audio_tokens` expected {frames.shape[0]} counts (one per video) but got {len(audio)}"
            )
        return AdaptedMedia(tokens, [VisualGrid(t, h, w, step, int(a)) for a in audio])

