"""The hyper-parameters every transformer stack shares, as one config nested in the families' configs.

Encoders, codecs, temporal modules and vision towers each hold a ``transformer: TransformerConfig``
instead of retyping width, depth, heads, MLP width, rotary base, norm epsilon and window; their
old flat keywords (``dim=``, ``depth=`` ...) keep working through :func:`omnikit.utils.config.flat_keywords`
(constructor, ``create_model`` overrides, old ``config.json`` files) and read back as properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.config_checks import NON_NEGATIVE

__all__ = ["TRANSFORMER_FIELDS", "TransformerConfig", "TransformerShape", "transformer_flat"]


@dataclass
class TransformerShape:
    """The sizes of a transformer stack, the first fields of every stack config: :class:`TransformerConfig`
    and :class:`~omnikit.layers.DecoderConfig` (which adds the decoder's options, vocabulary and embeddings)."""

    dim: int
    depth: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_hidden: int | None = None


@dataclass
class TransformerConfig(TransformerShape):
    """One transformer stack's hyper-parameters. Shapes: ``(B, T, dim) -> (B, T, dim)``.

    Attributes:
        dim: model width.
        depth: number of blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention; ``None``: ``num_heads``).
        head_dim: per-head width (``None``: ``dim // num_heads``).
        mlp_hidden: MLP hidden width (``None``: ``mlp_ratio * dim``, or the block's own default).
        mlp_ratio: MLP hidden width over ``dim`` where ``mlp_hidden`` is not set.
        rope_base: rotary base (``None``: no rotary, or positions of another kind).
        norm_eps: epsilon of the block norms.
        window: attention window in the owning model's unit (positions for a sliding window, mel
            frames for an audio tower's windows, pixels for a vision tower's); ``None``: full attention.
    """

    mlp_ratio: float = 4.0
    rope_base: float | None = None
    norm_eps: float = 1e-6
    window: int | None = field(default=None, metadata={"range": NON_NEGATIVE})


#: The fields of :class:`TransformerConfig`.
TRANSFORMER_FIELDS = ("dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "mlp_ratio",
                      "rope_base", "norm_eps", "window")


def transformer_flat(*names: str, **renamed: str) -> dict[str, tuple[str, str]]:
    """``flat_fields`` of a config nesting a :class:`TransformerConfig` as ``transformer``: each of ``names``
    is the flat keyword of the same field, each ``renamed`` item ``flat keyword=field`` (``n_window="window"``)."""
    unknown = sorted((set(names) | set(renamed.values())) - set(TRANSFORMER_FIELDS))
    if unknown:
        raise OmnikitValueError(f"`names` expected fields of TransformerConfig {TRANSFORMER_FIELDS} but got {unknown}")
    return {**{name: ("transformer", name) for name in names},
            **{flat: ("transformer", name) for flat, name in renamed.items()}}
