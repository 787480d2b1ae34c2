"""The transformer stack moved to :mod:`omnikit.layers.stack`; this path keeps importing it."""

from omnikit.layers.stack import TransformerStack

__all__ = ["TransformerStack"]
