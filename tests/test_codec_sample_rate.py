"""Every codec's ``encode(wav, sample_rate=...)`` refuses audio at another rate than the codec's (issue 28: 48 kHz
audio used to be coded silently as if it were at the codec's rate), and accepts its own."""

from __future__ import annotations

import pytest
import torch

import omnikit

CODECS = [n for n in omnikit.list_models("*_tiny", kind="codec") if hasattr(omnikit.create_model(n, device="meta"),
                                                                             "encode")]


def _encodec() -> torch.nn.Module:
    pytest.importorskip("encodec")
    from omnikit.convert.hub_encodec import build_encodec

    return build_encodec({"hidden_size": 16, "num_filters": 4, "upsampling_ratios": [8, 5, 4, 2],
                          "target_bandwidths": [1.5], "codebook_size": 32, "sampling_rate": 24000})


@pytest.mark.parametrize("name", [*CODECS, "encodec"])
def test_encode_refuses_another_sample_rate(name):
    assert {"dac_tiny", "mimi_tiny", "seanet_codec_tiny"} <= set(CODECS)
    torch.manual_seed(0)
    codec = _encodec() if name == "encodec" else omnikit.create_model(name).eval()
    wav = torch.randn(1, 1, 4 * getattr(codec, "hop", 320)) * 0.1
    with torch.no_grad():
        assert torch.equal(codec.encode(wav, sample_rate=codec.sample_rate), codec.encode(wav))
        for wrong in (48000 if codec.sample_rate != 48000 else 44100, -1, "16k"):
            with pytest.raises(ValueError, match=rf"`sample_rate` expected {codec.sample_rate} .* but got"):
                codec.encode(wav, sample_rate=wrong)
