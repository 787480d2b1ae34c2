"""Moved: the transformer stack lives in :mod:`omnikit.layers.stack` (imported from here too)."""

from omnikit.layers.stack import TransformerStack

__all__ = ["TransformerStack"]
