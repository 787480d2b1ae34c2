"""Language models: registered decoder entrypoints, :class:`CausalLM`, sampling and KV-cached generation."""

from omnikit.models import presets
from omnikit.models.generation import GenerationOutput, GenerationStep
from omnikit.models.language_model import CausalLM
from omnikit.models.prefill import chunk_spans, prefill
from omnikit.models.sampling import GREEDY, Sampling, sample_next

__all__ = [
    "GREEDY", "CausalLM", "GenerationOutput", "GenerationStep", "Sampling", "chunk_spans", "prefill", "presets",
    "sample_next",
]
