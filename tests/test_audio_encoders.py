"""Audio encoders: exact length arithmetic, batch invariance, streaming, wav2vec parity, presets, errors."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.audio.blocks import zero_padding

ENCODERS = ["whisper_encoder_tiny", "qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny", "wav2vec2_feature_encoder_tiny"]


def build(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name, **overrides).eval()


def channels(model: torch.nn.Module) -> int:
    return getattr(model.config, "n_mels", None) or model.config.in_channels


@pytest.mark.parametrize("name", ENCODERS)
def test_lengths_in_lengths_out_exact_on_random_batches(name: str) -> None:
    model = build(name)
    g = torch.Generator().manual_seed(hash(name) % 1000)
    lengths = torch.randint(5, 120, (6,), generator=g)
    x = torch.randn(6, channels(model), int(lengths.max()), generator=g)
    with torch.no_grad():
        out = model(zero_padding(x, lengths) + 30 * (torch.arange(x.shape[-1]) >= lengths[:, None])[:, None], lengths)
        assert torch.equal(out.lengths, model.output_lengths(lengths))
        assert out.hidden_states.shape[1] == int(out.lengths.max())
        for b in range(6):
            alone = model(x[b : b + 1, :, : int(lengths[b])])
            assert alone.hidden_states.shape[1] == int(out.lengths[b])
            torch.testing.assert_close(out.hidden_states[b, : out.lengths[b]], alone.hidden_states[0],
                                       atol=1e-5, rtol=1e-4)
            assert bool((out.hidden_states[b, out.lengths[b] :] == 0).all())


def test_windowed_encoder_output_rate_and_window_independence() -> None:
    model = build("qwen2_5_omni_audio_tiny")  # windows of 8 frames
    x = torch.randn(1, 16, 40)
    with torch.no_grad():
        full = model(x).hidden_states
        changed = x.clone()
        changed[..., 8:16] = torch.randn(16, 8)  # only the second window
        other = model(changed).hidden_states
    # 8 frames -> 4 conv tokens -> 2 output tokens per window; only window 2's tokens change
    assert full.shape[1] == 10
    torch.testing.assert_close(full[:, :2], other[:, :2])
    torch.testing.assert_close(full[:, 4:], other[:, 4:])
    assert not torch.allclose(full[:, 2:4], other[:, 2:4])


def test_aut_rate_is_13_tokens_per_second_and_windows_of_8_seconds() -> None:
    model = omnikit.create_model("qwen3_omni_aut", device="meta")
    assert model.output_lengths(torch.tensor([100 * 60, 150, 99])).tolist() == [13 * 60, 13 + 7, 13]
    assert model.independent_frames == 800 and model.chunk_tokens == 13


@pytest.mark.slow
def test_aut_compiles_once_for_one_or_several_attention_windows() -> None:
    """Compiled with a dynamic time, the AuT encoder needs one graph for inputs with one attention
    window per item and for longer ones (no tensor has a windows-per-item axis whose size 1 PyTorch
    would specialise), whatever their length modulo the 8-frame chunks and the windows; each equals eager."""
    model = build("qwen3_omni_aut_tiny").eval()  # chunks of 8 frames, attention windows of 16 frames
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for n, lengths in enumerate(([13, 9], [17, 12], [25, 6, 4], [16, 11], [40, 33], [32, 9])):
            case = model.contract_inputs(lengths, seed=n)
            with torch._dynamo.config.patch(error_on_recompile=n > 0):
                got = compiled(**case.kwargs)
            want = model(**case.kwargs)
            torch.testing.assert_close(got.hidden_states, want.hidden_states)
            assert torch.equal(got.lengths, want.lengths)


def test_wav2vec_conv_encoder_streams_with_random_chunks() -> None:
    model = build("wav2vec2_feature_encoder_tiny", channels=(6, 6, 6), kernels=(5, 3, 2), strides=(3, 2, 2))
    wav = torch.randn(2, 1, 257)
    with torch.no_grad():
        full = model(wav).hidden_states
        g = torch.Generator().manual_seed(5)
        pieces, start = [], 0
        with model.streaming(2):
            while start < 257:
                size = int(torch.randint(0, 40, (1,), generator=g))
                pieces.append(model(wav[..., start : start + size]).hidden_states if size else None)
                start += size
    streamed = torch.cat([p for p in pieces if p is not None], dim=1)
    assert model.receptive_field == 5 + 2 * 3 + 1 * 6 and model.hop == 12
    torch.testing.assert_close(streamed, full[:, : streamed.shape[1]], atol=1e-6, rtol=1e-5)
    assert streamed.shape[1] == full.shape[1]


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_wav2vec_feature_encoder_matches_transformers(norm: str) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        conv_dim=(8, 8, 8), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), conv_bias=norm == "layer",
        feat_extract_norm=norm, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
    )
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2Model(config).eval()
    ours = build("wav2vec2_feature_encoder_tiny", channels=(8, 8, 8), kernels=(10, 3, 2), strides=(5, 2, 2),
                 conv_bias=norm == "layer", norm=norm)
    state = {"proj_norm.weight": hf.feature_projection.layer_norm.weight,
             "proj_norm.bias": hf.feature_projection.layer_norm.bias,
             "proj.weight": hf.feature_projection.projection.weight,
             "proj.bias": hf.feature_projection.projection.bias}
    for i, layer in enumerate(hf.feature_extractor.conv_layers):
        state.update({f"convs.{i}.conv.{k}": v for k, v in layer.conv.state_dict().items()})
        if hasattr(layer, "layer_norm"):
            state.update({f"norms.{i}.{k}": v for k, v in layer.layer_norm.state_dict().items()})
    ours.load_state_dict(state, strict=True)
    wav = torch.randn(3, 1, 1601)
    with torch.no_grad():
        expected, _ = hf.feature_projection(hf.feature_extractor(wav[:, 0]).transpose(1, 2))
        out = ours(wav)
    torch.testing.assert_close(out.hidden_states, expected, atol=1e-5, rtol=1e-4)
    assert out.lengths.tolist() == [int(hf._get_feat_extract_output_lengths(1601))] * 3


def _hf_count(cls, config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in cls(config).parameters())


def test_published_presets_build_on_meta_with_published_parameter_counts() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as q25
    from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as c3
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as q3
    from transformers.models.whisper import modeling_whisper as w

    k_bias = 32 * 1280  # omnikit's fused qkv carries a (zero, inert) key bias the references lack
    whisper = omnikit.create_model("whisper_large_v3_encoder", device="meta")
    large_v3 = transformers.WhisperConfig(num_mel_bins=128, d_model=1280, encoder_layers=32,
                                          encoder_attention_heads=20, encoder_ffn_dim=5120)
    # Whisper's positions are a frozen embedding in transformers, a buffer here
    assert omnikit.count_parameters(whisper) == _hf_count(w.WhisperEncoder, large_v3) + k_bias - 1500 * 1280
    qwen = omnikit.create_model("qwen2_5_omni_audio", device="meta")
    hf25 = _hf_count(q25.Qwen2_5OmniAudioEncoder, transformers.Qwen2_5OmniAudioEncoderConfig())
    assert omnikit.count_parameters(qwen) == hf25 + k_bias - 2 * 3584  # minus the unused bos/eos embedding
    aut = omnikit.create_model("qwen3_omni_aut", device="meta")
    hf3 = _hf_count(q3.Qwen3OmniMoeAudioEncoder, c3.Qwen3OmniMoeAudioEncoderConfig(output_dim=2048))
    assert omnikit.count_parameters(aut) == hf3  # the Qwen3 tower already has a key bias


@pytest.mark.parametrize(
    "name,features,lengths,match",
    [
        ("whisper_encoder_tiny", torch.randn(1, 80, 10), None, r"features.*\(B, 16, T\)"),
        ("whisper_encoder_tiny", torch.randn(1, 16, 129), None, "at most 128 frames"),
        ("qwen2_5_omni_audio_tiny", torch.randn(2, 16, 10), torch.tensor([10, 11]), "lengths"),
        ("qwen2_5_omni_audio_tiny", torch.randn(2, 16, 10), torch.tensor([10.0, 3.0]), "integer"),
        ("qwen3_omni_aut_tiny", torch.randn(2, 16, 0), None, "at least one frame"),
        ("wav2vec2_feature_encoder_tiny", torch.randn(2, 2, 10), None, r"features.*\(B, 1, T\)"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(name: str, features, lengths, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build(name)(features, lengths)


def test_group_norm_encoder_refuses_to_stream() -> None:
    model = build("wav2vec2_feature_encoder_tiny", norm="group")
    assert not model.supports_streaming
    with model.streaming(1), pytest.raises(ValueError, match="cannot stream"):
        model(torch.randn(1, 1, 20))
