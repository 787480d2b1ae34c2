"""Published-size presets build on meta with parameter counts within 2% of the reference implementation's."""

from __future__ import annotations

import pytest

import omnikit

# transformers' Qwen3-Omni-MoE Thinker and Talker built on device="meta" with the published config.json
# shapes (counted once; see docs/thinker_talker.md for the script). The Qwen2.5-Omni presets are checked
# for exact equality against live references in tests/test_convert_hub_qwen2_5_omni.py.
REFERENCE = {
    "qwen3_omni_30b_a3b_thinker": 31_718_681_200,
    "qwen3_omni_30b_a3b_talker": 3_277_408_000,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_preset_builds_on_meta_within_two_percent(name: str) -> None:
    model = omnikit.create_model(name, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    count = omnikit.count_parameters(model)
    assert abs(count - REFERENCE[name]) / REFERENCE[name] < 0.02, f"{name}: {count:,} vs {REFERENCE[name]:,}"


def test_presets_use_the_published_position_schemes() -> None:
    q25 = omnikit.create_model("qwen2_5_omni_7b_thinker", device="meta")
    q3 = omnikit.create_model("qwen3_omni_30b_a3b_thinker", device="meta")
    assert q25.scheme.ids_per_second == 25 and q25.scheme.seconds_per_chunk == 2.0
    assert q25.text_model.config.mrope_sections == (16, 24, 24) and not q25.text_model.config.mrope_interleaved
    assert q3.scheme.seconds_per_chunk is None and q3.scheme.fractional
    assert q3.thinker.config.mrope_interleaved
    talker = omnikit.create_model("qwen3_omni_30b_a3b_talker", device="meta")
    assert talker.config.strategy == "mtp" and talker.config.num_codebooks == 16
