"""The public contract of ../shared/API.md: every promised name exists with the promised signature."""

from __future__ import annotations

import inspect

import torch

import omnikit
import omnikit.audio
import omnikit.convert
import omnikit.video
import omnikit.vision


def params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def test_registry_and_checkpoint_signatures() -> None:
    p = params(omnikit.list_models)
    assert p["pattern"].default == "*" and p["kind"].kind is inspect.Parameter.KEYWORD_ONLY
    p = params(omnikit.create_model)
    for name in ("pretrained", "device", "dtype"):
        assert p[name].kind is inspect.Parameter.KEYWORD_ONLY and p[name].default is None
    assert any(v.kind is inspect.Parameter.VAR_KEYWORD for v in p.values())
    assert list(params(omnikit.save_pretrained))[:2] == ["model", "directory"]
    p = params(omnikit.load_pretrained)
    assert p["device"].default is None and p["dtype"].default is None
    assert callable(omnikit.register_model)
    assert {"audio_encoder", "codec", "frame_encoder", "temporal", "moe", "adapter", "decoder", "talker",
            "omni"} <= set(omnikit.KINDS)


def test_every_kind_has_a_registered_tiny_model() -> None:
    for kind in ("audio_encoder", "codec", "frame_encoder", "temporal", "moe", "adapter", "decoder", "talker",
                 "omni"):
        assert omnikit.list_models("*_tiny", kind=kind), f"no *_tiny model of kind {kind!r}"


def test_convert_names() -> None:
    required = {"WhisperEncoder", "Qwen2_5OmniAudioEncoder", "Qwen3MoeSparseMoeBlock", "Qwen2MoeSparseMoeBlock",
                "Qwen3DecoderLayer"}
    assert required <= set(omnikit.convert.supported_transformers_classes())
    assert callable(omnikit.convert.from_encodec)


def test_media_names_and_signatures() -> None:
    p = params(omnikit.video.load_video)
    assert next(iter(p)) == "path"
    assert {k: p[k].default for k in ("num_frames", "fps", "strategy", "size")} == {
        "num_frames": None, "fps": None, "strategy": "uniform", "size": None}
    assert next(iter(params(omnikit.video.detect_scenes))) == "path"
    p = params(omnikit.vision.FrameEncoder)
    assert next(iter(p)) == "backbone" and p["pretrained"].default is False
    assert list(params(omnikit.audio.ResidualVQ))[:3] == ["dim", "num_quantizers", "codebook_size"]


def test_residual_vq_returns_quantized_first() -> None:
    rvq = omnikit.audio.ResidualVQ(8, 2, 16)
    x = torch.randn(2, 5, 8)
    out = rvq(x)
    quantized = out.quantized if hasattr(out, "quantized") else out[0]
    assert quantized.shape == x.shape


def test_codec_interface() -> None:
    codec = omnikit.create_model("seanet_codec_tiny").eval()
    for attribute in ("sample_rate", "frame_rate", "num_codebooks", "codebook_size"):
        assert hasattr(codec, attribute)
    wav = torch.randn(1, 1, codec.sample_rate // 10)
    with torch.no_grad():
        codes = codec.encode(wav)
        assert codes.dtype == torch.int64 and codes.ndim == 3 and codes.shape[1] == codec.num_codebooks
        assert codec.decode(codes).ndim == 3


def test_decoder_block_alone_and_moe_drop_in() -> None:
    from omnikit.layers import DecoderBlock

    x = torch.randn(2, 6, 32)
    assert DecoderBlock(32, 4)(x).shape == x.shape
    moe = omnikit.create_model("moe_tiny")
    y = torch.randn(2, 6, moe.config.dim)
    out = moe(y)
    assert isinstance(out, torch.Tensor) and out.shape == y.shape
    out, aux = moe(y, return_aux=True)
    assert out.shape == y.shape and torch.isfinite(aux.load_balancing_loss)
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(moe).values())


def test_audio_encoder_calling_convention() -> None:
    enc = omnikit.create_model("whisper_encoder_tiny").eval()
    n_mels = enc.config.n_mels
    features = torch.randn(2, n_mels, 40)
    with torch.no_grad():
        out = enc(features, lengths=torch.tensor([40, 22]))
    assert out.hidden_states.ndim == 3 and out.lengths.dtype == torch.int64 and out.lengths.shape == (2,)


def test_distributed_parallelize_signature() -> None:
    from omnikit.distributed import parallelize

    params = inspect.signature(parallelize).parameters
    assert list(params)[:2] == ["model", "mesh"]
