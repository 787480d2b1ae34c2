"""Interop: published checkpoints and Hugging Face ``transformers`` / ``encodec`` modules.

Published checkpoints (no ``transformers`` needed):

- ``load_hf(path, *, part=None, device=None, dtype=None)``: a Hub-layout directory -> omnikit model;
- ``save_hf(model, path, *, max_shard_size="5GB")``: the inverse, loadable by ``from_pretrained``;
- ``hf_inputs(model, inputs)``: a transformers processor's outputs -> the model's forward kwargs;
- ``build_hf(config, *, part=None)``: the model of a ``config.json`` dict with fresh weights (``save_hf``
  writes it as a random snapshot).

Adding an architecture (one ``hub_<family>.py`` file, plus a line in
:data:`~omnikit.convert.architectures.BUILTIN_MODULES` so it is imported on first use)::

    from omnikit.convert.architectures import Part, register_architecture
    from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip, StackExperts

    def audio_map(config: dict) -> KeyMap:       # omnikit key <- checkpoint name (relative to prefix)
        return KeyMap((
            Rename("conv1.weight", "conv1.weight"),
            Fuse("encoder.blocks.{i}.attn.qkv.bias",  # cat along dim 0; None = zeros, not saved
                 ("layers.{i}.self_attn.q_proj.bias", None, "layers.{i}.self_attn.v_proj.bias"), (d, d, d)),
            StackExperts("blocks.{i}.mlp.experts.down", ("layers.{i}.mlp.experts.{e}.down_proj.weight",)),
            Skip("rotary_emb.inv_freq"),             # ignored on load, never written
        ))

    register_architecture("MyOmniForConditionalGeneration", parts={
        "audio_encoder": Part(build=lambda config: MyAudio(...), key_map=audio_map,
                              prefix="thinker.audio_tower.", inputs=my_inputs),
        "thinker": Part(build=..., key_map=..., prefix="thinker."),
    }, default_part="thinker")

``Part.build(config)`` runs with parameters on the meta device (buffers are real);
``load_hf`` expands the key map over the built model's keys, checks names and header shapes,
opens only the shards holding ``Part.owns`` (default ``(prefix,)``) and loads with
``load_state_dict(assign=True)``. ``KeyMap.under(prefix)`` reuses a submodule's map inside a bigger
model (``whisper_key_map(dim).under("audio.")``), ``+`` concatenates maps, and
``Legacy(old, new)`` reads an older spelling of checkpoint names.

Modules already instantiated: ``from_transformers(hf_module)`` dispatches on the class name of
the module it is given through the same registry: a hub file declares the module once as a
``Mapped(config=ConfigMap(...), build=..., key_map=...)`` and calls
``register_transformers("WhisperEncoder", mapped)``, so the conversion reads the config map and the
key map ``load_hf`` reads (``transformers`` is never imported by omnikit itself).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from omnikit.utils.checks import OmnikitTypeError

__all__ = [
    "build_hf",
    "converter",
    "from_encodec",
    "from_transformers",
    "hf_inputs",
    "load_hf",
    "save_hf",
    "supported_architectures",
    "supported_transformers_classes",
]

def converter(class_name: str) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator: register ``fn(hf_module) -> nn.Module`` as the conversion of the transformers class
    ``class_name`` (a class whose maps exist is registered with
    :func:`~omnikit.convert.architectures.register_transformers` instead)."""

    def decorator(fn: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        from omnikit.convert.architectures import register_transformers

        register_transformers(class_name, fn)
        return fn

    return decorator


def supported_transformers_classes() -> list[str]:
    """Names of the transformers classes :func:`from_transformers` accepts."""
    from omnikit.convert.architectures import supported_transformers_classes as names

    return names()


def from_transformers(hf_module: nn.Module) -> nn.Module:
    """An omnikit module with the hyper-parameters and weights of ``hf_module``.

    Outputs match the original's to float32 rounding. Supported classes:
    :func:`supported_transformers_classes`. The returned module is on the same device and dtype.
    The conversion reads the same config and key maps as :func:`load_hf` (one registry,
    :mod:`omnikit.convert.architectures`).
    """
    if not isinstance(hf_module, nn.Module):
        raise OmnikitTypeError(f"`hf_module` expected an instantiated nn.Module but got {type(hf_module).__name__}")
    from omnikit.convert.architectures import transformers_converter

    return transformers_converter(hf_module)(hf_module)


def from_encodec(model: Any, bandwidth: float | None = None) -> nn.Module:
    """An omnikit codec tokenizer wrapping ``encodec.EncodecModel`` (identical codes and audio).

    ``bandwidth`` (kbps) picks the number of codebooks; ``None`` keeps the model's own setting.
    """
    module = importlib.import_module("omnikit.convert.encodec")
    return module.from_encodec(model, bandwidth=bandwidth)


def load_hf(path: Any, *, part: str | None = None, device: Any = None, dtype: Any = None) -> nn.Module:
    """The omnikit model of a Hub-layout checkpoint directory (see :func:`omnikit.convert.load.load_hf`)."""
    from omnikit.convert.load import load_hf as load

    return load(path, part=part, device=device, dtype=dtype)


def build_hf(config: Any, *, part: str | None = None) -> nn.Module:
    """The model of a ``config.json`` dict with fresh weights (see :func:`omnikit.convert.load.build_hf`)."""
    from omnikit.convert.load import build_hf as build

    return build(config, part=part)


def save_hf(model: nn.Module, path: Any, **kwargs: Any) -> Any:
    """Write ``model`` in the Hub layout (see :func:`omnikit.convert.save.save_hf`); returns the directory."""
    from omnikit.convert.save import save_hf as save

    return save(model, path, **kwargs)


def hf_inputs(model: nn.Module, inputs: Any) -> dict[str, Any]:
    """Forward kwargs of ``model`` from a transformers processor's outputs (see :mod:`omnikit.convert.inputs`)."""
    from omnikit.convert.inputs import hf_inputs as convert

    return convert(model, inputs)


def supported_architectures() -> list[str]:
    """Names of the published architectures :func:`load_hf` loads."""
    from omnikit.convert.architectures import supported_architectures as names

    return names()
