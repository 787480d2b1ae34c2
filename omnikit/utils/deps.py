"""Lazy imports of the optional video/vision dependencies, with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["new_figure", "require"]

_EXTRA = {"av": "video", "decord": "video", "timm": "vision", "torchvision": "vision", "matplotlib": "plot"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the omnikit extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRA.get(module, "all")
        raise ImportError(
            f"this feature needs the optional package {module!r}: `pip install omnikit[{extra}]`"
        ) from err


def new_figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure(**kwargs)`` that saves without pyplot: no backend is switched and no
    global figure state is kept, so plotting never changes a notebook's or script's matplotlib setup."""
    return require("matplotlib.figure").Figure(**kwargs)
