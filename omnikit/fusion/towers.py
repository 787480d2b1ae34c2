"""Which tower every parameter of an omni model belongs to: audio, vision, projector, thinker, talker.

Found from the module tree (the module types), never from parameter names:

- ``audio``: the encoder inside an :class:`AudioAdapter` (or of the adapter a fusion model holds
  under ``adapters["audio"]``);
- ``vision``: the encoder inside a :class:`VideoAdapter` (or of an adapter held under another key);
- ``projector``: what connects media to the language model: the adapters (any module a fusion
  model holds in ``adapters``) but their encoders, Perceiver resamplers and the gated
  cross-attention part of every :class:`FusionLayer`; in a published-layout Thinker
  (:class:`OmniThinker`: Qwen2.5-Omni, Qwen3-Omni) the parts its towers name in
  ``projector_modules`` (the vision mergers, deepstack mergers included, and the audio tower's
  output projection);
- ``thinker``: the language model (a :class:`CausalLM` / Thinker) minus its fusion layers;
- ``talker``: a :class:`Talker`, or a published Talker (:class:`OmniTalker`,
  :class:`Qwen3OmniTalker`), its code predictor and input projections included;
- ``other``: the rest (a codec, ...).

:func:`tower_parameters` feeds the per-tower recipes of :mod:`omnikit.fusion.recipes` and
:func:`lora_targets` the ``target_modules`` / ``target_parameters`` of a ``peft.LoraConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from omnikit.fusion import AudioAdapter, FusionLayer, Talker, VideoAdapter
from omnikit.fusion.media import HoldsAdapters
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.layers.attention import Attention
from omnikit.layers.mlp import GeluMLP, SwiGLU
from omnikit.models.language_model import CausalLM
from omnikit.moe.experts import SwiGLUExperts
from omnikit.speech.omni_talker import OmniTalker
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, ResizeMLP
from omnikit.utils.checks import OmnikitValueError
from omnikit.video.temporal.resampler import PerceiverResampler

__all__ = ["LORA_KINDS", "TOWERS", "linear_kinds", "lora_parameter_counts", "lora_targets", "tower_modules",
           "tower_parameters", "train_towers"]

TOWERS: tuple[str, ...] = ("audio", "vision", "projector", "thinker", "talker")

#: Layer kinds :func:`lora_targets` can select: attention projections, dense MLP linears (projector
#: MLPs and mergers included), MoE experts (3-D), and every other ``nn.Linear`` (output heads, the
#: code predictor's heads, shared-expert gates, input projections).
LORA_KINDS: tuple[str, ...] = ("attention", "mlp", "experts", "linear")

_TALKERS = (Talker, OmniTalker, Qwen3OmniTalker)
_MLPS = (SwiGLU, GeluMLP, ResizeMLP)


def tower_modules(model: nn.Module) -> dict[str, str]:
    """``{module name: tower}`` for every module of ``model`` (``"other"`` where no tower claims it)."""
    tower: dict[str, str] = {}

    def mark(prefix: str, module: nn.Module, name: str) -> None:
        for sub, _ in module.named_modules(prefix=prefix):
            tower[sub] = name

    named = list(model.named_modules())
    for name, module in named:  # outer modules first, inner ones override
        if isinstance(module, CausalLM):
            mark(name, module, "thinker")
        elif isinstance(module, _TALKERS):
            mark(name, module, "talker")
        elif isinstance(module, OmniThinker):
            for attr, label in (("audio_encoder", "audio"), ("vision_encoder", "vision")):
                encoder = getattr(module, attr)
                mark(_join(name, attr), encoder, label)
                for part in _projector_parts(encoder):
                    mark(_join(name, f"{attr}.{part}"), encoder.get_submodule(part), "projector")
        elif isinstance(module, HoldsAdapters):  # adapters of any type, found by their modality key
            for modality, adapter in module.adapters.items():
                _mark_adapter(mark, _join(name, f"adapters.{modality}"), adapter, modality == "audio")
        elif isinstance(module, (AudioAdapter, VideoAdapter)):
            _mark_adapter(mark, name, module, isinstance(module, AudioAdapter))
        elif isinstance(module, PerceiverResampler):
            mark(name, module, "projector")
    for name, module in named:
        if isinstance(module, FusionLayer):
            mark(_join(name, "fusion"), module.fusion, "projector")
    return {name: tower.get(name, "other") for name, _ in named}


def _mark_adapter(mark: Callable[[str, nn.Module, str], None], name: str, adapter: nn.Module, audio: bool) -> None:
    """An adapter is ``projector``; its ``encoder`` (if it has one) ``audio`` or ``vision``."""
    mark(name, adapter, "projector")
    encoder = getattr(adapter, "encoder", None)
    if isinstance(encoder, nn.Module):
        mark(_join(name, "encoder"), encoder, "audio" if audio else "vision")


def _projector_parts(encoder: nn.Module) -> list[str]:
    """The submodules a published tower names in ``projector_modules`` (present ones)."""
    return [p for p in getattr(encoder, "projector_modules", ()) if getattr(encoder, p, None) is not None]


def linear_kinds(model: nn.Module) -> dict[str, str]:
    """``{name: kind}`` for every ``nn.Linear`` of ``model``: ``"attention"`` inside an :class:`Attention`,
    ``"mlp"`` inside a dense MLP or a projector part of a published tower, else ``"linear"``."""
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():  # outer modules first, inner ones override
        if isinstance(module, OmniThinker):
            kind = {_join(name, f"{attr}.{part}"): "mlp" for attr in ("audio_encoder", "vision_encoder")
                    for part in _projector_parts(getattr(module, attr))}
        else:
            kind = {name: "attention"} if isinstance(module, Attention) else {name: "mlp"} if isinstance(
                module, _MLPS) else {}
        for prefix, label in kind.items():
            for sub, child in model.get_submodule(prefix).named_modules(prefix=prefix):
                if isinstance(child, nn.Linear):
                    kinds[sub] = label
    return {name: kinds.get(name, "linear") for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def tower_parameters(model: nn.Module) -> dict[str, list[str]]:
    """``{tower: [parameter names]}`` over :data:`TOWERS` and ``"other"``; every parameter is in one."""
    modules = tower_modules(model)
    groups: dict[str, list[str]] = {t: [] for t in (*TOWERS, "other")}
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        groups[modules[owner]].append(name)
    return groups


def lora_targets(
    model: nn.Module, towers: Sequence[str] = ("thinker",), kinds: Sequence[str] = ("attention", "mlp")
) -> dict[str, list[str]]:
    """Full names to hand to ``peft.LoraConfig(**lora_targets(model, ...))``.

    Returns ``{"target_modules": [...], "target_parameters": [...]}``: the ``nn.Linear`` layers of
    ``towers`` of the ``kinds`` :func:`linear_kinds` gives them (``"attention"``, ``"mlp"``,
    ``"linear"``), and the stacked ``(E, out, in)`` weights of their MoE experts (``"experts"``; peft
    adapts each expert with its own rank-``r`` pair through ``target_parameters``). Works on
    omnikit's models and on the published ones :func:`omnikit.convert.load_hf` returns (Thinker with
    its audio and vision towers, Talker with its code predictor, the whole omni model). Routers and
    embeddings are not targeted.
    """
    for label, values, allowed in (("towers", towers, TOWERS), ("kinds", kinds, LORA_KINDS)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise OmnikitValueError(f"`{label}` expected a non-empty subset of {allowed} but got {tuple(values)}")
    tower = tower_modules(model)
    linear = linear_kinds(model)
    modules = [name for name, kind in linear.items() if kind in kinds and tower[name] in towers]
    parameters = [_join(name, w) for name, module in model.named_modules()
                  if "experts" in kinds and tower[name] in towers and isinstance(module, SwiGLUExperts)
                  for w in ("gate_up", "down")]
    return {"target_modules": modules, "target_parameters": parameters}


def lora_parameter_counts(model: nn.Module, targets: Mapping[str, Sequence[str]], r: int) -> dict[str, int]:
    """``{tower: trainable parameters}`` that rank-``r`` LoRA on ``targets`` (what :func:`lora_targets`
    returned) adds, towers without adapters left out; their sum is what peft reports trainable.
    An ``nn.Linear`` gets ``r * (in + out)``, a stacked ``(E, a, b)`` expert weight ``r * E * (a + b)``."""
    tower = tower_modules(model)
    counts: dict[str, int] = {}
    for name in targets.get("target_modules", ()):
        layer = model.get_submodule(name)
        counts[tower[name]] = counts.get(tower[name], 0) + r * (layer.in_features + layer.out_features)
    for name in targets.get("target_parameters", ()):
        experts, a, b = model.get_parameter(name).shape
        owner = name.rpartition(".")[0]
        counts[tower[owner]] = counts.get(tower[owner], 0) + r * experts * (a + b)
    return counts


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def train_towers(model: nn.Module, towers: Sequence[str]) -> list[str]:
    """Train the parameters of ``towers`` only (e.g. ``("audio",)`` or ``("projector", "talker")``),
    freeze every other one; returns the sorted trainable names. A codec (tower ``"other"``) stays frozen."""
    bad = [t for t in towers if t not in TOWERS]
    if bad or not towers:
        raise OmnikitValueError(f"`towers` expected a non-empty subset of {TOWERS} but got {tuple(towers)}")
    groups = tower_parameters(model)
    train = {name for t in towers for name in groups[t]}
    for name, p in model.named_parameters():
        p.requires_grad_(name in train)
    return sorted(train)
