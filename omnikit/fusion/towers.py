"""Which tower every parameter of an omni model belongs to: audio, vision, projector, thinker, talker.

Found from the module tree (the module types), never from parameter names:

- ``audio``: the encoder inside an :class:`AudioAdapter` (or of the adapter a fusion model holds
  under ``adapters["audio"]``), a Gemma 4 audio tower (its soft-token embedder is ``projector``);
- ``vision``: the encoder inside a :class:`VideoAdapter` (or of an adapter held under another key),
  a Gemma 4 vision tower (its embedder is ``projector``);
- ``projector``: what connects media to the language model: the adapters (any module a fusion
  model holds in ``adapters``) but their encoders, Perceiver resamplers and the gated
  cross-attention part of every :class:`FusionLayer`; in a published-layout Thinker
  (:class:`OmniThinker`: Qwen2.5-Omni, Qwen3-Omni) the parts its towers name in
  ``projector_modules`` (the vision mergers, deepstack mergers included, and the audio tower's
  output projection);
- ``thinker``: the language model (any :class:`TokenLM`: a :class:`CausalLM` / Thinker, Gemma 4's)
  minus its fusion layers;
- ``talker``: a :class:`Talker`, or a published Talker (:class:`OmniTalker`,
  :class:`Qwen3OmniTalker`), its code predictor and input projections included;
- a full-duplex model (:class:`~omnikit.speech.DuplexModel`, Moshi): its temporal transformer and
  token embeddings are ``thinker``, its text head and depth transformer ``talker``;
- ``other``: the rest (a codec, ...).

:func:`tower_parameters` feeds the per-tower recipes of :mod:`omnikit.fusion.recipes` and
:func:`lora_targets` the ``target_modules`` / ``target_parameters`` of a ``peft.LoraConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from omnikit.audio.gemma4 import BlockedLocalAttention, Gemma4AudioEncoder, HalfStepFeedForward, LightConv
from omnikit.fusion import AudioAdapter, FusionLayer, Talker, VideoAdapter
from omnikit.fusion.media import HoldsAdapters
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.layers.attention import Attention
from omnikit.layers.linear_attention import GatedDeltaNet
from omnikit.layers.mlp import GeluMLP, SwiGLU
from omnikit.models.gemma4 import PerLayerBranch
from omnikit.models.language_model import TokenLM
from omnikit.moe.experts import SwiGLUExperts
from omnikit.speech.duplex import DuplexModel
from omnikit.speech.omni_talker import OmniTalker
from omnikit.speech.per_codebook_depth import PerCodebookAttention, PerCodebookLinear, PerCodebookMLP
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, ResizeMLP
from omnikit.utils.checks import OmnikitValueError
from omnikit.video.temporal.resampler import PerceiverResampler
from omnikit.vision.gemma4 import Gemma4VisionEncoder

__all__ = ["LORA_KINDS", "TOWERS", "linear_kinds", "lora_parameter_counts", "lora_targets", "tower_modules",
           "tower_parameters", "train_towers"]

TOWERS: tuple[str, ...] = ("audio", "vision", "projector", "thinker", "talker")

#: Layer kinds :func:`lora_targets` can select: attention projections (softmax attention, Gemma 4's
#: blocked attention, the Gated DeltaNet token mixer), dense MLP linears (projector MLPs and mergers,
#: Gemma 4's half-step feed-forwards, conv modules and
#: per-layer-embedding branches included), MoE experts (3-D), every other
#: ``nn.Linear`` (output heads, the code predictor's heads, shared-expert gates, input projections),
#: and token embeddings.
LORA_KINDS: tuple[str, ...] = ("attention", "mlp", "experts", "linear", "embeddings")

_TALKERS = (Talker, OmniTalker, Qwen3OmniTalker)
#: module types whose linears are of the kind named: found by type, never by name
_KIND_PARENTS: dict[str, tuple[type, ...]] = {
    "attention": (Attention, BlockedLocalAttention, GatedDeltaNet, PerCodebookAttention),
    "mlp": (SwiGLU, GeluMLP, ResizeMLP, HalfStepFeedForward, LightConv, PerCodebookMLP, PerLayerBranch),
}


def tower_modules(model: nn.Module) -> dict[str, str]:
    """``{module name: tower}`` for every module of ``model`` (``"other"`` where no tower claims it)."""
    tower: dict[str, str] = {}

    def mark(prefix: str, module: nn.Module, name: str) -> None:
        for sub, _ in module.named_modules(prefix=prefix):
            tower[sub] = name

    named = list(model.named_modules())
    for name, module in named:  # outer modules first, inner ones override
        if isinstance(module, TokenLM):
            mark(name, module, "thinker")
        elif isinstance(module, (Gemma4AudioEncoder, Gemma4VisionEncoder)):
            mark(name, module, "audio" if isinstance(module, Gemma4AudioEncoder) else "vision")
            if module.embed is not None:
                mark(_join(name, "embed"), module.embed, "projector")
        elif isinstance(module, _TALKERS):
            mark(name, module, "talker")
        elif isinstance(module, DuplexModel):
            for child, part in (("embed", "thinker"), ("temporal", "thinker"), ("text_head", "talker"),
                                ("depth", "talker")):
                mark(_join(name, child), getattr(module, child), part)
        elif isinstance(module, OmniThinker):
            for attr, label in (("audio_encoder", "audio"), ("vision_encoder", "vision")):
                encoder = getattr(module, attr)
                if encoder is None:  # a Thinker without this tower (Qwen3.5: no audio)
                    continue
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


def _projector_parts(encoder: nn.Module | None) -> list[str]:
    """The submodules a published tower names in ``projector_modules`` (present ones)."""
    return [p for p in getattr(encoder, "projector_modules", ()) if getattr(encoder, p, None) is not None]


def _layer_kinds(model: nn.Module) -> dict[str, str]:
    """``{module name: "attention" | "mlp"}`` of every module inside an attention or MLP block (or a
    published tower's projector part); the innermost block decides."""
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():  # outer modules first, inner ones override
        if isinstance(module, OmniThinker):
            parents = {_join(name, f"{attr}.{part}"): "mlp" for attr in ("audio_encoder", "vision_encoder")
                       for part in _projector_parts(getattr(module, attr))}
        else:
            found = [kind for kind, types in _KIND_PARENTS.items() if isinstance(module, types)]
            parents = {name: found[0]} if found else {}
        for prefix, kind in parents.items():
            for sub, _ in model.get_submodule(prefix).named_modules(prefix=prefix):
                kinds[sub] = kind
    return kinds


def linear_kinds(model: nn.Module) -> dict[str, str]:
    """``{name: kind}`` for every ``nn.Linear`` of ``model``: ``"attention"`` inside an attention block,
    ``"mlp"`` inside a dense MLP or a projector part of a published tower, else ``"linear"``."""
    kinds = _layer_kinds(model)
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
    model: nn.Module, towers: str | Sequence[str] = ("thinker",), kinds: str | Sequence[str] = ("attention", "mlp")
) -> dict[str, list[str]]:
    """Full names to hand to ``peft.LoraConfig(**lora_targets(model, ...))``.

    Returns ``{"target_modules": [...], "target_parameters": [...]}``: the ``nn.Linear`` layers of
    ``towers`` of the ``kinds`` :func:`linear_kinds` gives them (``"attention"``, ``"mlp"``,
    ``"linear"``; clippable linears are ``nn.Linear`` s), their ``nn.Embedding`` tables
    (``"embeddings"``), and 3-D weights through ``target_parameters`` (peft adapts each slice with
    its own rank-``r`` pair): the stacked ``(E, out, in)`` weights of MoE experts (``"experts"``) and
    the per-codebook ``(K, out, in)`` weights of Moshi's depth decoder (with their block's kind).
    Works on omnikit's models and on the published ones :func:`omnikit.convert.load_hf` returns
    (Thinker with its audio and vision towers, Talker with its code predictor, the whole omni model,
    Gemma 4, Moshi). Routers are not targeted.
    """
    towers, kinds = _subset(towers, "towers", TOWERS), _subset(kinds, "kinds", LORA_KINDS)
    tower = tower_modules(model)
    layer_kinds = _layer_kinds(model)
    modules: list[str] = []
    parameters: list[str] = []
    for name, module in model.named_modules():
        if tower[name] not in towers:
            continue
        kind = layer_kinds.get(name, "linear")
        linear = isinstance(module, nn.Linear) and kind in kinds
        if linear or (isinstance(module, nn.Embedding) and "embeddings" in kinds):
            modules.append(name)
        elif isinstance(module, PerCodebookLinear) and kind in kinds:
            parameters.append(_join(name, "weight"))
        elif isinstance(module, SwiGLUExperts) and "experts" in kinds:
            parameters += [_join(name, "gate_up"), _join(name, "down")]
    return {"target_modules": modules, "target_parameters": parameters}


def lora_parameter_counts(model: nn.Module, targets: Mapping[str, Sequence[str]], r: int) -> dict[str, int]:
    """``{tower: trainable parameters}`` that rank-``r`` LoRA on ``targets`` (what :func:`lora_targets`
    returned) adds, towers without adapters left out; their sum is what peft reports trainable.
    An ``nn.Linear`` gets ``r * (in + out)``, an ``nn.Embedding`` ``r * (num + dim)``, a stacked
    ``(E, a, b)`` weight ``r * E * (a + b)``."""
    tower = tower_modules(model)
    counts: dict[str, int] = {}
    for name in targets.get("target_modules", ()):
        layer = model.get_submodule(name)
        sizes = ((layer.num_embeddings, layer.embedding_dim) if isinstance(layer, nn.Embedding)
                 else (layer.in_features, layer.out_features))
        counts[tower[name]] = counts.get(tower[name], 0) + r * sum(sizes)
    for name in targets.get("target_parameters", ()):
        experts, a, b = model.get_parameter(name).shape
        owner = name.rpartition(".")[0]
        counts[tower[owner]] = counts.get(tower[owner], 0) + r * experts * (a + b)
    return counts


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _subset(values: str | Sequence[str], label: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` (one name or several) as a tuple, checked to be a non-empty subset of ``allowed``."""
    values = (values,) if isinstance(values, str) else tuple(values)  # one name, not its letters
    if not values or any(v not in allowed for v in values):
        raise OmnikitValueError(f"`{label}` expected a non-empty subset of {allowed} but got {values}")
    return values


def train_towers(model: nn.Module, towers: str | Sequence[str]) -> list[str]:
    """Train the parameters of ``towers`` only (e.g. ``("audio",)`` or ``("projector", "talker")``),
    freeze every other one; returns the sorted trainable names. A codec (tower ``"other"``) stays frozen."""
    towers = _subset(towers, "towers", TOWERS)
    groups = tower_parameters(model)
    train = {name for t in towers for name in groups[t]}
    for name, p in model.named_parameters():
        p.requires_grad_(name in train)
    return sorted(train)
