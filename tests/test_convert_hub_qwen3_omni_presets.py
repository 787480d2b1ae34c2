"""Qwen3-Omni-30B-A3B presets: parameter counts equal transformers' models built on the meta device from the
published config values (``qwen3_omni_reference.PUBLISHED``), computed live."""

from __future__ import annotations

import pytest
import torch
from qwen3_omni_reference import PUBLISHED

import omnikit

pytest.importorskip("transformers")
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as modeling
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
    Qwen3OmniMoeCode2WavConfig,
    Qwen3OmniMoeTalkerConfig,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeVisionEncoderConfig,
)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def thinker() -> torch.nn.Module:
    config = Qwen3OmniMoeThinkerConfig(text_config=PUBLISHED["thinker_text"], vision_config=PUBLISHED["vision"],
                                       audio_config=PUBLISHED["audio"])
    with torch.device("meta"):
        return modeling.Qwen3OmniMoeThinkerForConditionalGeneration(config)


def test_vision_tower_count_is_exact(thinker) -> None:
    with torch.device("meta"):
        tower = modeling.Qwen3OmniMoeVisionEncoder(Qwen3OmniMoeVisionEncoderConfig(**PUBLISHED["vision"]))
    ours = omnikit.create_model("qwen3_vit_omni_30b_a3b", device="meta")
    assert omnikit.count_parameters(ours) == count(tower) == count(thinker.model.visual)
    assert len(ours.deepstack_mergers) == 3


def test_thinker_preset_count_is_exact(thinker) -> None:
    ours = omnikit.create_model("qwen3_omni_30b_a3b_thinker", device="meta")
    assert omnikit.count_parameters(ours) == count(thinker)


def test_talker_preset_count_is_exact() -> None:
    config = Qwen3OmniMoeTalkerConfig(text_config=PUBLISHED["talker_text"],
                                      code_predictor_config=PUBLISHED["code_predictor"], **PUBLISHED["talker"])
    with torch.device("meta"):
        talker = modeling.Qwen3OmniMoeTalkerForConditionalGeneration(config)
    assert omnikit.count_parameters(omnikit.create_model("qwen3_omni_30b_a3b_talker", device="meta")) == count(talker)


def test_code2wav_preset_count_is_exact() -> None:
    with torch.device("meta"):
        code2wav = modeling.Qwen3OmniMoeCode2Wav(Qwen3OmniMoeCode2WavConfig(**PUBLISHED["code2wav"]))
    assert omnikit.count_parameters(omnikit.create_model("code2wav_qwen3_omni", device="meta")) == count(code2wav)


def test_save_hf_config_of_the_thinker_preset_is_the_published_one() -> None:
    """The config ``save_hf`` derives for ``qwen3_omni_30b_a3b_thinker`` holds the published values
    (``conv_chunksize``, a transformers batching knob, is left to its default)."""
    from omnikit.convert.architectures import origin_of

    origin, _ = origin_of(omnikit.create_model("qwen3_omni_30b_a3b_thinker", device="meta"))
    thinker = origin.config["thinker_config"]
    for ours, published in (("text_config", "thinker_text"), ("vision_config", "vision"), ("audio_config", "audio")):
        expected = {k: v for k, v in PUBLISHED[published].items() if k != "conv_chunksize"}
        assert {k: thinker[ours].get(k) for k in expected} == expected, ours
    assert origin.config["enable_audio_output"] is False
