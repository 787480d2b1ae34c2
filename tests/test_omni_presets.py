"""Published-size omni presets use the published position schemes.

Their parameter counts are checked for exact equality against live transformers references in
tests/test_convert_hub_qwen2_5_omni.py and tests/test_convert_hub_qwen3_omni_presets.py.
"""

from __future__ import annotations

import omnikit


def test_presets_use_the_published_position_schemes() -> None:
    q25 = omnikit.create_model("qwen2_5_omni_7b_thinker", device="meta")
    q3 = omnikit.create_model("qwen3_omni_30b_a3b_thinker", device="meta")
    assert q25.scheme.ids_per_second == 25 and q25.scheme.seconds_per_chunk == 2.0
    assert q25.text_model.config.mrope_sections == (16, 24, 24) and not q25.text_model.config.mrope_interleaved
    assert q3.scheme.seconds_per_chunk is None and q3.scheme.fractional
    assert q3.text_model.config.mrope_interleaved and q3.text_model.config.mrope_sections == (24, 20, 20)
    talker = omnikit.create_model("qwen3_omni_30b_a3b_talker", device="meta")
    assert talker.config.num_codebooks == 16
