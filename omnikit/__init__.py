"""omnikit: omni-modal building blocks for PyTorch.

Top-level names are the public contract (see ``docs/api.md``)::

    import omnikit
    omnikit.list_models("*_tiny")
    model = omnikit.create_model("decoder_tiny", depth=4)
    omnikit.save_pretrained(model, "ckpt/")
    same = omnikit.load_pretrained("ckpt/")
"""

# importing the families registers their entrypoints
from omnikit import audio, fusion, models, moe, speech, video, vision  # noqa: F401
from omnikit.checkpoint import load_pretrained, save_pretrained
from omnikit.registry import KINDS, ModelInfo, create_model, list_models, model_info, register_model
from omnikit.streaming import StreamingModule, streaming
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError
from omnikit.utils.training import count_parameters, set_gradient_checkpointing
from omnikit.version import __version__

__all__ = [
    "KINDS",
    "ModelInfo",
    "OmnikitTypeError",
    "OmnikitValueError",
    "StreamingModule",
    "__version__",
    "count_parameters",
    "create_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
    "save_pretrained",
    "set_gradient_checkpointing",
    "streaming",
]
