"""Moved: the optional-dependency helper lives in :mod:`omnikit.utils.deps` (imported from here too)."""

from omnikit.utils.deps import require

__all__ = ["require"]
