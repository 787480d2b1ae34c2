"""Registered model entrypoints that are not tied to one modality family (language decoders)."""

from omnikit.models import decoders
from omnikit.models.language_model import CausalLM

__all__ = ["CausalLM", "decoders"]
