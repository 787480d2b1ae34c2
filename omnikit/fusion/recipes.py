"""Trainable / frozen parameter selection for the usual omni training recipes.

Parameters fall in four groups, found from the module tree (not from names): every module that
has a ``fusion_groups()`` method declares ``{group: submodule}`` (later entries and inner modules
override outer ones):

- ``lm``: the language model (a :class:`CausalLM` / Thinker), excluding fusion layers inside it;
- ``encoders``: media encoders inside adapters;
- ``adapters``: adapters, projectors, resamplers, Q-Formers and the ``fusion`` part of every
  :class:`FusionLayer` (its gated cross-attention and tanh gates);
- ``other``: anything else (a Talker, ...).

A new module joins a group by defining ``fusion_groups``; nothing here needs to know its class.

Recipes: ``"full"`` trains everything; ``"freeze_lm"`` freezes the language model only;
``"adapters"`` trains only adapters (Flamingo / LLaVA stage 1: frozen LM and encoders);
``"gates"`` trains only the tanh gates of the fusion layers.
"""

from __future__ import annotations

from torch import nn

from omnikit.utils.checks import check_choice

__all__ = ["RECIPES", "apply_recipe", "parameter_groups"]

RECIPES: dict[str, tuple[str, ...]] = {
    "full": ("lm", "encoders", "adapters", "other"),
    "freeze_lm": ("encoders", "adapters", "other"),
    "adapters": ("adapters",),
    "gates": (),
}


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """``{group: [parameter names]}`` for the groups described in the module docstring."""
    group_of: dict[int, str] = {}

    def mark(module: nn.Module, group: str) -> None:
        for p in module.parameters():
            group_of[id(p)] = group

    for module in model.modules():  # outer modules first, inner ones override
        declare = getattr(module, "fusion_groups", None)
        if callable(declare):
            for group, part in declare().items():
                mark(part, group)
    groups: dict[str, list[str]] = {"lm": [], "encoders": [], "adapters": [], "other": []}
    for name, p in model.named_parameters():
        groups[group_of.get(id(p), "other")].append(name)
    return groups


def apply_recipe(model: nn.Module, recipe: str) -> list[str]:
    """Set ``requires_grad`` for ``recipe`` (see :data:`RECIPES`); returns the trainable names."""
    check_choice(recipe, "recipe", RECIPES)
    groups = parameter_groups(model)
    train = {n for g in RECIPES[recipe] for n in groups[g]}
    if recipe == "gates":
        train = {n for n in groups["adapters"] if n.endswith(("attn_gate", "ff_gate"))}
    for name, p in model.named_parameters():
        p.requires_grad_(name in train)
    return sorted(train)
