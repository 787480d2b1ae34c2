"""Qwen2.5-Omni-style windowed audio encoder: 25 tokens/s, attention confined to 2 s windows.

Per item, the log-mel frames (16 kHz, 128 mels, 100 frames/s) are cut into windows of
``2 * n_window`` frames (200 = 2 s). Each window independently goes through

1. a conv stem ``conv1`` (k3 s1) -> GELU -> ``conv2`` (k3 s2) -> GELU, zero-padded at the window's
   edges, giving ``n_window`` tokens (50/s);
2. sinusoidal positions restarting at 0 in every window;
3. a pre-LN transformer whose attention never crosses the window.

The item's tokens are then averaged in pairs (stride-2 pool, 25/s), layer-normed and projected to
``output_dim``. Lengths: ``T' = ((T - 1) // 2 + 1 - 2) // 2 + 1``.

Windows of every item are packed along the batch axis and computed together (the reference
loops over them); windows holding only padding are skipped. Because windows are independent,
any batch of clips of any lengths gives each clip exactly its own output, and
:func:`omnikit.audio.encode_long` encodes hours in bounded memory with identical results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import (
    EncoderStack,
    check_features,
    feature_contract_inputs,
    on_valid_steps,
    sinusoids,
    zero_padding,
)
from omnikit.audio.windows import Windows
from omnikit.layers import LayerNorm, lengths_to_mask
from omnikit.layers.linear import Linear
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field

__all__ = ["WindowedAudioEncoder", "WindowedAudioEncoderConfig"]


@flat_keywords
@dataclass
class WindowedAudioEncoderConfig(NestedConfig):
    """Hyper-parameters of :class:`WindowedAudioEncoder` (defaults: Qwen2.5-Omni-7B's audio tower).

    ``stem_init``: initial weights of the conv stem, ``"torch"`` (PyTorch's default) or ``"he"``
    (normal, std ``sqrt(2 / fan_in)``, zero biases). Only training from scratch sees it: a loaded
    checkpoint overwrites it. With ``"torch"`` the stem's output at initialisation is about 10x smaller
    than the sinusoidal positions added to it (std 0.04 against 0.49 on 0.3-std log-mels), so what a short
    sound changes hardly shows in the tokens; ``"he"`` keeps the stem's output near its input's scale
    (docs/fusion.md).
    """

    n_mels: int = 128
    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=1280, depth=32, num_heads=20, mlp_hidden=5120, window=100, norm_eps=1e-5)
    output_dim: int = 3584
    backend: str = "sdpa"
    stem_init: Literal["torch", "he"] = "torch"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps", n_window="window")


class WindowedAudioEncoder(nn.Module):
    """Qwen2.5-Omni audio encoder with the omnikit batch API.

    Weights: ``conv1``, ``conv2``, ``encoder``, ``norm`` (ln_post), ``proj``.
    """

    #: The output projection: the ``projector`` part for per-tower recipes and LoRA (omnikit.fusion.towers).
    projector_modules: tuple[str, ...] = ("proj",)

    def __init__(self, config: WindowedAudioEncoderConfig) -> None:
        super().__init__()
        check_positive(config.n_window, "n_window")
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.dim, config.dim, kernel_size=3, stride=2, padding=1)
        if config.stem_init == "he":
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        self.register_buffer("positions", sinusoids(config.n_window, config.dim), persistent=False)
        self.encoder = EncoderStack(config.dim, config.depth, config.num_heads, config.mlp_hidden,
                                    norm_eps=config.norm_eps, backend=config.backend)
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)
        self.proj = Linear(config.dim, config.output_dim)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    @property
    def window_frames(self) -> int:
        """Mel frames per attention window (``2 * n_window``)."""
        return 2 * self.config.n_window

    @property
    def independent_frames(self) -> int:
        """Cutting the input at multiples of this many frames leaves the output unchanged."""
        return self.window_frames * (1 if self.config.n_window % 2 == 0 else 2)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per item: stride-2 conv, then stride-2 pool over pairs."""
        lengths = lengths if isinstance(lengths, (int, torch.SymInt)) else torch.as_tensor(lengths)
        after_conv = (lengths - 1) // 2 + 1
        return (after_conv - 2) // 2 + 1

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """``features (B, n_mels, T)``, ``lengths (B,)`` valid frames -> ``(B, T', output_dim)``."""
        x, n = check_features(features, lengths, self.config.n_mels, like=self)
        out_lengths = self.output_lengths(n)
        if not torch.compiler.is_compiling() and int(out_lengths.min()) < 1:
            short = int(out_lengths.argmin())
            raise OmnikitValueError(
                f"`{'lengths' if lengths is not None else 'features'}` expected at least 3 valid frames per item "
                f"(one token after the stride-2 conv and the pair pooling) but item {short} has {int(n[short])}"
            )
        windows = Windows.plan(n, self.window_frames, x.shape[-1])
        rows = windows.split(zero_padding(x, n))  # (N, n_mels, 2 * n_window)
        h = F.gelu(self.conv1(rows))
        tokens_valid = (windows.valid - 1) // 2 + 1
        if windows.ragged:
            h = h * lengths_to_mask(windows.valid, rows.shape[-1])[:, None, :].to(h.dtype)
        h = F.gelu(self.conv2(h)).transpose(1, 2) + self.positions.to(h.dtype)
        h = windows.merge(self.encoder.forward_ragged(h, tokens_valid))  # (B, windows * n_window, dim)
        # eager: cropped to the longest item; traced: the padded length's (no size read from values)
        pairs = int(out_lengths.max()) if not torch.compiler.is_compiling() else self.output_lengths(x.shape[-1])
        h = (h[:, 0 : 2 * pairs : 2] + h[:, 1 : 2 * pairs : 2]) / 2
        return EncoderOutput(on_valid_steps(lambda v: self.proj(self.norm(v)), h, out_lengths), out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.n_mels, lengths, seed)
