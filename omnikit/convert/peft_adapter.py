"""A LoRA adapter trained on a ``load_hf`` model, saved in peft's format under the published module names.

::

    model = peft.get_peft_model(load_hf(path), LoraConfig(r=8, **lora_targets(thinker, towers)))
    ...                                                     # train
    save_hf_adapter(model, "adapter")                       # adapter_model.safetensors + adapter_config.json
    # then, with transformers and peft only:
    # PeftModel.from_pretrained(Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path), "adapter")

Each adapted ``nn.Linear`` is mapped through the architecture's key map (the one ``load_hf`` and
``save_hf`` use): a layer saved under one published name keeps its pair; a layer omnikit fuses from
several published ones (``q_proj``, ``k_proj``, ``v_proj`` -> ``qkv``) gives each of them the shared
``lora_A`` and its rows of ``lora_B``, which is the same update. Names are those of the modules of
transformers 5, which loads a Qwen-Omni Thinker's checkpoint names ``audio_tower.*``, ``visual.*``
and ``model.*`` as ``model.audio_tower.*``, ``model.visual.*`` and ``model.language_model.*``. LoRA on MoE experts
(``target_parameters``), DoRA and per-module rank or alpha patterns are refused: merge them and use
:func:`~omnikit.convert.save_hf`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from omnikit.checkpoint import write_atomically
from omnikit.convert.architectures import origin_of
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["module_name", "save_hf_adapter"]

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"

#: Checkpoint name -> transformers 5 module name inside a Qwen-Omni Thinker (first match wins).
_THINKER_MODULES = ((r"audio_tower\.", "model.audio_tower."), (r"visual\.", "model.visual."),
                    (r"model\.(?!language_model\.|visual\.|audio_tower\.)", "model.language_model."))
#: Architecture -> the checkpoint prefix of its Thinker.
_THINKER_PREFIX = {"Qwen2_5OmniThinkerForConditionalGeneration": "", "Qwen2_5OmniForConditionalGeneration": "thinker.",
                   "Qwen3OmniMoeForConditionalGeneration": "thinker."}


def module_name(architecture: str, checkpoint_name: str) -> str:
    """The transformers 5 module that holds the checkpoint tensor ``checkpoint_name`` (its name unchanged
    outside a Qwen-Omni Thinker)."""
    prefix = _THINKER_PREFIX.get(architecture)
    if prefix is None or not checkpoint_name.startswith(prefix):
        return checkpoint_name
    rest = checkpoint_name[len(prefix):]
    for pattern, new in _THINKER_MODULES:
        match = re.match(pattern, rest)
        if match:
            return prefix + new + rest[match.end():]
    return checkpoint_name


def save_hf_adapter(model: nn.Module, directory: str | Path, *, adapter_name: str = "default") -> Path:
    """Write ``model``'s (a ``peft.PeftModel`` over a model :func:`load_hf` returned) LoRA adapter
    ``adapter_name`` in peft's layout, named for the published architecture; returns ``directory``."""
    if not hasattr(model, "get_base_model") or adapter_name not in getattr(model, "peft_config", {}):
        raise OmnikitTypeError(f"`model` expected a peft model with adapter {adapter_name!r} but got "
                               f"{type(model).__name__}")
    config = model.peft_config[adapter_name]
    unsupported = {"target_parameters": getattr(config, "target_parameters", None),
                   "use_dora": getattr(config, "use_dora", False), "rank_pattern": config.rank_pattern,
                   "alpha_pattern": config.alpha_pattern, "modules_to_save": config.modules_to_save}
    given = sorted(k for k, v in unsupported.items() if v)
    if getattr(config, "peft_type", None) != "LORA" or given:
        raise OmnikitValueError(f"`model` expected a plain LoRA adapter but it uses {given or config.peft_type}; "
                                "merge it (merge_and_unload) and write the model with save_hf instead")
    base = model.get_base_model()
    origin, part = origin_of(base)
    layers = {name: m for name, m in base.named_modules() if adapter_name in getattr(m, "lora_A", {})}
    shapes = {f"{name}.weight": layer.base_layer.weight.shape for name, layer in layers.items()}
    plan = part.key_map(origin.config).prefixed(part.prefix).plan(shapes)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        a = layer.lora_A[adapter_name].weight.detach()
        b = layer.lora_B[adapter_name].weight.detach()
        for piece in plan[f"{name}.weight"]:
            if piece.source is None or not piece.source.endswith(".weight") or any(
                    dim != 0 or length is None for dim, _, length in piece.index):
                raise OmnikitValueError(f"LoRA on {name!r} has no published linear layer to go to ({piece})")
            rows = b if not piece.index else b.narrow(0, piece.index[0][1], piece.index[0][2])
            module = module_name(origin.architecture, piece.source.removesuffix(".weight"))
            tensors[f"base_model.model.{module}.lora_A.weight"] = a.cpu().clone()
            tensors[f"base_model.model.{module}.lora_B.weight"] = rows.cpu().clone()
    if not tensors:
        raise OmnikitValueError(f"`model` has no LoRA layers for adapter {adapter_name!r}")
    modules = sorted({k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in tensors})
    adapter_config: dict[str, Any] = {
        "peft_type": "LORA", "task_type": None, "r": config.r, "lora_alpha": config.lora_alpha,
        "use_rslora": config.use_rslora, "lora_dropout": config.lora_dropout, "bias": config.bias,
        "fan_in_fan_out": False, "target_modules": modules, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": origin.architecture,
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
    write_atomically(out, [(ADAPTER_WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})),
                           (ADAPTER_CONFIG, lambda p: p.write_text(text, encoding="utf-8"))])
    return out
