"""Qwen3.5 vision-language models from the Hub: ``Qwen3_5ForConditionalGeneration``,
``Qwen3_5MoeForConditionalGeneration``.

Parts (checkpoint prefixes):

- ``"model"`` (default): :class:`~omnikit.fusion.Qwen3_5VL`, the processor's inputs -> logits (the vision
  tower ``model.visual.*``, the hybrid language model ``model.language_model.*`` and ``lm_head``);
- ``"text_model"``: the language model alone as a text :class:`~omnikit.models.CausalLM` (1-D positions,
  where M-RoPE with equal ``t``/``h``/``w`` ids is the plain rotary);
- ``"vision_encoder"``: the :class:`~omnikit.vision.Qwen3ViT` tower without deepstack mergers.

The language model is the Qwen3.5 / Qwen3.5-MoE hybrid of :mod:`omnikit.convert.hub_qwen3_next` (its config in
``text_config``) plus interleaved M-RoPE sections (``rope_parameters.mrope_section``) on its partial rotary
dims. The tower is the Qwen3-VL one (:data:`~omnikit.convert.qwen3_omni_vision.TOWER`) whose merger is named
``norm`` / ``linear_fc1`` / ``linear_fc2``. The multi-token-prediction head (``mtp.*``) is skipped by rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from torch import nn

from omnikit.convert.architectures import Config, Mapped, Part, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Fixed
from omnikit.convert.hub_qwen2_5_omni import thinker_inputs
from omnikit.convert.hub_qwen3_next import TEXT, build_text, export_text_config, text_key_map
from omnikit.convert.hub_qwen3_omni import vision_inputs
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip, StackExperts
from omnikit.convert.qwen3_omni_vision import TOWER, TOWER_KEYS
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.qwen3_5_vl import Qwen3_5VL
from omnikit.fusion.thinker import Thinker
from omnikit.layers.hybrid import HybridConfig
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = ["ARCHITECTURES", "TEXT_VL", "VISION_CONFIGS", "VISION_KEYS", "build_model", "export_config", "model_key_map",
           "text_config", "vision_config"]

#: Vision-language architecture -> (its ``model_type``, the text architecture of its language model).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "Qwen3_5ForConditionalGeneration": ("qwen3_5", "Qwen3_5ForCausalLM"),
    "Qwen3_5MoeForConditionalGeneration": ("qwen3_5_moe", "Qwen3_5MoeForCausalLM"),
}

#: transformers' placeholder and marker ids of Qwen3.5 (its config defaults).
_TOKENS = {"image_token_id": 248056, "video_token_id": 248057}
_MARKERS = {"vision_start_token_id": 248053, "vision_end_token_id": 248054}

#: omnikit key <- transformers key of the tower (relative to ``model.visual.``).
VISION_KEYS = TOWER_KEYS + KeyMap((
    Rename("merger.norm.{p}", "merger.norm.{p}"),
    Rename("merger.mlp.0.{p}", "merger.linear_fc1.{p}"),
    Rename("merger.mlp.2.{p}", "merger.linear_fc2.{p}"),
))

#: architecture -> the map of its ``vision_config`` (:class:`~omnikit.vision.Qwen3ViTConfig`, no deepstack mergers;
#: the two differ in the ``model_type`` they write).
VISION_CONFIGS: dict[str, ConfigMap] = {name: TOWER + ConfigMap((
    Fixed("deepstack_indexes", ()), Constant("model_type", f"{model_type}_vision"),
    Constant("rope_parameters.rope_type", "axial"),
)) for name, (model_type, _) in ARCHITECTURES.items()}
#: The :class:`~omnikit.vision.Qwen3ViTConfig` of a Qwen3.5 ``vision_config`` (both architectures read alike).
vision_config = VISION_CONFIGS["Qwen3_5ForConditionalGeneration"]


def _text(config: Config) -> Config:
    """The language model's ``config.json`` values inside a vision-language config."""
    text = config.get("text_config")
    if not isinstance(text, Mapping):
        raise OmnikitValueError("a Qwen3.5 vision-language config expected a `text_config` mapping")
    return {**text, "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))}


def _text_architecture(config: Config) -> str:
    return ARCHITECTURES[config["architectures"][0]][1]


def _sections(value: object, fields: dict) -> tuple[int, int, int]:
    """``mrope_section``: three ints splitting the rotary frequencies (``rotary_dim / 2``)."""
    rotary = fields["rotary_dim"] // 2
    if not isinstance(value, (list, tuple)) or len(value) != 3 or sum(value) != rotary:
        raise OmnikitValueError(
            f"text_config rope parameters expected a 3-entry mrope_section summing to the {rotary} rotary "
            f"frequencies but got {value!r}"
        )
    return tuple(int(v) for v in value)


#: text architecture -> the map of its language model inside a vision-language checkpoint: the hybrid map
#: (:data:`~omnikit.convert.hub_qwen3_next.TEXT`) plus interleaved M-RoPE sections (transformers' default
#: ``[11, 11, 10]`` when absent).
TEXT_VL: dict[str, ConfigMap] = {text: TEXT[text] + ConfigMap((
    Convert("mrope_sections", "rope_parameters.mrope_section", _sections, lambda v, f: list(v), [11, 11, 10]),
    Fixed("mrope_interleaved", True), Constant("rope_parameters.mrope_interleaved", True),
)) for _, text in ARCHITECTURES.values()}


def text_config(config: Config) -> HybridConfig:
    """The hybrid language model's config (:data:`TEXT_VL`) of a vision-language ``config.json``."""
    return TEXT_VL[_text_architecture(config)](_text(config))


def build_model(config: Config) -> Qwen3_5VL:
    """The :class:`Qwen3_5VL` of a ``config.json`` dict."""
    tokens = {k: config.get(k, v) for k, v in _TOKENS.items()}
    media = MediaTokens(image=tokens["image_token_id"], video=tokens["video_token_id"])
    text = build_text(_text(config), _text_architecture(config),
                      lambda cfg, mlps: Thinker(cfg, mlps, media_tokens=media), text_config(config))
    return Qwen3_5VL(text, vision_encoder=Qwen3ViT(vision_config(config.get("vision_config") or {})),
                     marker_tokens={k: config.get(k, v) for k, v in _MARKERS.items()})


def _under_language_model(key_map: KeyMap) -> KeyMap:
    """``key_map`` with its ``model.*`` checkpoint names moved to ``model.language_model.*`` (``lm_head`` stays)."""
    def move(name: str | None) -> str | None:
        return "model.language_model." + name[len("model."):] if name and name.startswith("model.") else name

    rules = []
    for rule in key_map.rules:
        if isinstance(rule, (Rename, Skip)):
            rule = replace(rule, theirs=move(rule.theirs))
        elif isinstance(rule, (Fuse, StackExperts)):
            rule = replace(rule, theirs=tuple(move(t) for t in rule.theirs))
        rules.append(rule)
    return KeyMap(tuple(rules))


def _language_model_keys(config: Config) -> KeyMap:
    return _under_language_model(text_key_map(_text(config), _text_architecture(config)))


def model_key_map(config: Config) -> KeyMap:
    """Qwen3_5VL keys <- checkpoint names (``model.language_model.*``, ``lm_head``, ``model.visual.*``, ``mtp.*``)."""
    return _language_model_keys(config).under("text_model.") + VISION_KEYS.prefixed("model.visual.").under(
        "vision_encoder.")


def export_config(model: nn.Module) -> Config | None:
    """The ``config.json`` of a :class:`Qwen3_5VL` built without ``load_hf`` (a preset), or None when its
    layout is not a Qwen3.5 one."""
    if not isinstance(model, Qwen3_5VL):
        return None
    for architecture, (model_type, text_architecture) in ARCHITECTURES.items():
        text = export_text_config(model.text_model, text_architecture, TEXT_VL[text_architecture])
        vision = VISION_CONFIGS[architecture].write(model.vision_encoder.config)
        patch = model.vision_encoder.config.patch
        if text is None or vision is None or patch[1] != patch[2]:
            continue
        cfg = model.text_model.config
        tokens = model.text_model.media_tokens
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return {"architectures": [architecture], "model_type": model_type, "dtype": dtype,
                "image_token_id": tokens.image, "video_token_id": tokens.video, **_MARKERS, **model.marker_tokens,
                "tie_word_embeddings": cfg.tie_embeddings, "text_config": text, "vision_config": vision}
    return None


def _vision(config: Config) -> Config:
    return config.get("vision_config") or {}


VISION = Mapped(vision_config, Qwen3ViT, lambda c: VISION_KEYS)

for _name, (_, _text_name) in ARCHITECTURES.items():
    register_architecture(_name, default_part="model", parts={
        "model": Part(build_model, model_key_map, inputs=thinker_inputs, export_config=export_config),
        "text_model": Part(lambda c: build_text(_text(c), _text_architecture(c)), _language_model_keys,
                           owns=("model.language_model.", "lm_head."), inputs=text_inputs),
        "vision_encoder": VISION.part("model.visual.", select=_vision, inputs=vision_inputs),
    })
register_transformers("Qwen3_5VisionModel", VISION)
register_transformers("Qwen3_5MoeVisionModel", VISION)
