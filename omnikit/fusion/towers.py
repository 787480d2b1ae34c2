"""Which tower every parameter of an omni model belongs to: audio, vision, projector, thinker, talker.

Found from the module tree (the module types), never from parameter names:

- ``audio``: the encoder inside an :class:`AudioAdapter` (or of the adapter a fusion model holds
  under ``adapters["audio"]``);
- ``vision``: the encoder inside a :class:`VideoAdapter` (or of an adapter held under another key);
- ``projector``: what connects media to the language model: the adapters (any module a fusion
  model holds in ``adapters``) but their encoders, Perceiver resamplers and the gated
  cross-attention part of every :class:`FusionLayer`;
- ``thinker``: the language model (a :class:`CausalLM` / Thinker) minus its fusion layers;
- ``talker``: a :class:`Talker` (its code predictor included);
- a full-duplex model (:class:`~omnikit.speech.DuplexModel`, Moshi): its temporal transformer and
  token embeddings are ``thinker``, its text head and depth transformer ``talker``;
- ``other``: the rest (a codec, ...).

:func:`tower_parameters` feeds the per-tower recipes of :mod:`omnikit.fusion.recipes` and
:func:`lora_targets` the ``target_modules`` / ``target_parameters`` of a ``peft.LoraConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from omnikit.fusion import AudioAdapter, FusionLayer, Talker, VideoAdapter
from omnikit.fusion.media import HoldsAdapters
from omnikit.layers.attention import Attention
from omnikit.layers.mlp import GeluMLP, SwiGLU
from omnikit.models.language_model import CausalLM
from omnikit.moe.experts import SwiGLUExperts
from omnikit.speech.duplex import DuplexModel
from omnikit.speech.per_codebook_depth import PerCodebookAttention, PerCodebookLinear, PerCodebookMLP
from omnikit.utils.checks import OmnikitValueError
from omnikit.video.temporal.resampler import PerceiverResampler

__all__ = ["LORA_KINDS", "TOWERS", "lora_targets", "tower_modules", "tower_parameters", "train_towers"]

TOWERS: tuple[str, ...] = ("audio", "vision", "projector", "thinker", "talker")

#: Layer kinds :func:`lora_targets` can select: attention projections, dense MLP linears, MoE experts,
#: token embeddings.
LORA_KINDS: tuple[str, ...] = ("attention", "mlp", "experts", "embeddings")


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
        elif isinstance(module, Talker):
            mark(name, module, "talker")
        elif isinstance(module, DuplexModel):
            for child, part in (("embed", "thinker"), ("temporal", "thinker"), ("text_head", "talker"),
                                ("depth", "talker")):
                mark(_join(name, child), getattr(module, child), part)
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
    the attention (``kinds`` has ``"attention"``) and dense MLP (``"mlp"``) modules of ``towers``,
    the stacked ``(E, out, in)`` weights of their MoE experts (``"experts"``; peft adapts each
    expert with its own rank-``r`` pair through ``target_parameters``), and their ``nn.Embedding``
    tables (``"embeddings"``). Per-codebook weights ``(K, out, in)`` of Moshi's depth decoder
    (:class:`~omnikit.speech.per_codebook_depth.PerCodebookLinear` in its attention and MLP) go to
    ``target_parameters`` like experts: one rank-``r`` pair per codebook.
    """
    for label, values, allowed in (("towers", towers, TOWERS), ("kinds", kinds, LORA_KINDS)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise OmnikitValueError(f"`{label}` expected a non-empty subset of {allowed} but got {tuple(values)}")
    tower = tower_modules(model)
    parents = {"attention": (Attention, PerCodebookAttention), "mlp": (SwiGLU, GeluMLP, PerCodebookMLP)}
    modules: list[str] = []
    parameters: list[str] = []
    for name, module in model.named_modules():
        if tower[name] not in towers:
            continue
        for kind in kinds:
            if kind == "experts" and isinstance(module, SwiGLUExperts):
                parameters += [_join(name, "gate_up"), _join(name, "down")]
            elif kind == "embeddings" and isinstance(module, nn.Embedding):
                modules.append(name)
            elif kind in parents and isinstance(module, parents[kind]):
                children = list(module.named_children())
                modules += [_join(name, sub) for sub, child in children if isinstance(child, nn.Linear)]
                parameters += [_join(name, f"{sub}.weight") for sub, child in children
                               if isinstance(child, PerCodebookLinear)]
    return {"target_modules": modules, "target_parameters": parameters}


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
