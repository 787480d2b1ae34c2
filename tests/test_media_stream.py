"""Media of any length streamed from disk in windows: the streamed log-mel equals the one-call frontend,
every audio encoder and the video towers equal one pass on short inputs, and the stream reads its source
lazily (what it holds follows the window, not the recording)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

import omnikit
from omnikit.audio import LogMelSpectrogram, encode_long
from omnikit.audio.stream import encode_stream, stream_encode, stream_log_mel
from omnikit.video import load_video
from omnikit.video.stream import encode_video_stream, stream_encode_video
from omnikit.video.synthetic import write_synthetic_video

WAV = 0.1 * torch.randn(16000 * 5 + 123, generator=torch.Generator().manual_seed(0))


def _chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[..., i : i + size] for i in range(0, x.shape[-1], size)]


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= rtol * float(want.abs().max())


@pytest.mark.parametrize(("samples", "scale", "piece"), [(WAV.numel(), 1.0, 3001), (170, 1.0, 50),
                                                          (4000, 2.0**45, 999)])
def test_streamed_log_mel_equals_one_call(samples: int, scale: float, piece: int) -> None:
    frontend = LogMelSpectrogram(80)
    wav = WAV[:samples] * scale
    want, _ = frontend(wav[None, None])
    got = torch.cat(list(stream_log_mel(frontend, _chunks(wav, piece), chunk_frames=7)), dim=-1)
    _close(got, want[0])


def _write_wav(path, wav: torch.Tensor) -> str:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((wav.numpy() * 32767).round().astype(np.int16).tobytes())
    return str(path)


@pytest.mark.parametrize("name", ["whisper_encoder_tiny", "qwen2_5_omni_audio_tiny", "qwen3_omni_aut_tiny"])
def test_log_mel_encoders_equal_one_pass(name: str, tmp_path) -> None:
    encoder = omnikit.create_model(name).eval()
    mel, _ = LogMelSpectrogram(encoder.config.n_mels)(WAV[None, None])
    with torch.no_grad():
        want = encode_long(encoder, mel, progress=False).hidden_states[0]  # whole clip (Whisper: 30 s windows)
    _close(encode_stream(encoder, _chunks(WAV, 3001), chunk_seconds=2.0), want)
    path = _write_wav(tmp_path / "a.wav", WAV)
    from omnikit.video.audio import load_audio

    decoded, _ = load_audio(path, sample_rate=16000, mono=True)
    with torch.no_grad():
        want = encode_long(encoder, LogMelSpectrogram(encoder.config.n_mels)(decoded[None])[0],
                           progress=False).hidden_states[0]
    _close(encode_stream(encoder, path, chunk_seconds=1.0), want)


def test_gemma4_streams_its_features() -> None:
    encoder = omnikit.create_model("gemma4_audio_tiny").eval()
    features = torch.randn(encoder.config.n_mels, 1234, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = encoder(features[None]).hidden_states[0]
    _close(encode_stream(encoder, _chunks(features, 100), chunk_seconds=1.0, features=True), want)
    with pytest.raises(ValueError, match="features=True"):
        encode_stream(encoder, WAV)


def test_wav2vec2_windows_keep_the_frame_grid() -> None:
    encoder = omnikit.create_model("wav2vec2_tiny").eval()  # hop 4 samples: 1 s is 4,000 frames
    wav = WAV[:16123]
    with torch.no_grad():
        want = encoder(wav[None]).hidden_states[0]
    _close(encode_stream(encoder, iter(_chunks(wav, 3001)), chunk_seconds=2.0), want)  # one window: one pass
    pieces = list(stream_encode(encoder, _chunks(wav, 3001), chunk_seconds=0.25))
    assert len(pieces) == 5
    assert sum(len(p) for p in pieces) == int(encoder.output_lengths(torch.tensor([wav.numel()]))[0])
    with torch.no_grad():  # each window is encoded on its own
        second = encoder(wav[None, 4000 : 8000 + encoder.features.receptive_field - encoder.hop]).hidden_states[0]
    _close(pieces[1], second)


@pytest.mark.parametrize("name", ["mimi_tiny", "seanet_codec_tiny"])
@pytest.mark.parametrize("extra", [0, 5])
def test_streaming_codecs_equal_encode(name: str, extra: int) -> None:
    codec = omnikit.create_model(name).eval()
    wav = WAV[: codec.stream_chunk * 37 + extra]
    want = codec.encode(wav[None, None])[0]
    got = encode_stream(codec, _chunks(wav, 1000), chunk_seconds=codec.stream_chunk * 5 / codec.sample_rate)
    assert got.shape == want.shape
    whole = want.shape[-1] - (1 if extra and name == "mimi_tiny" else 0)  # Mimi pads a partial frame its own way
    assert torch.equal(got[:, :whole], want[:, :whole])


def test_the_stream_reads_lazily() -> None:
    pulled = []

    def source():
        for k, piece in enumerate(_chunks(torch.cat([WAV] * 4), 1600)):
            pulled.append(k)
            yield piece

    encoder = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    stream = stream_encode(encoder, source, chunk_seconds=2.0)
    next(stream)
    assert len(pulled) >= 4 * 50  # the peak pass reads the whole clip once, then the first window
    pulled.clear()
    next(stream)
    assert len(pulled) <= 2 * 2.0 * 16000 / 1600 + 2  # the second window: about 2 s more, not the clip


def test_bad_sources() -> None:
    encoder = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    with pytest.raises(TypeError, match="read only once"):
        encode_stream(encoder, iter(_chunks(WAV, 3001)))
    with pytest.raises(ValueError, match="NaN or inf"):
        encode_stream(encoder, [WAV[:8000], torch.full((100,), float("nan"))])
    with pytest.raises(ValueError, match=r"chunk 1 expected shape \(n,\)"):
        encode_stream(encoder, [WAV[:8000], WAV[:100].reshape(10, 10)])
    with pytest.raises(ValueError, match="empty"):
        encode_stream(encoder, [WAV[:0]])
    with pytest.raises(TypeError, match="audio encoder"):
        encode_stream(torch.nn.Linear(2, 2), WAV)
    with pytest.raises(ValueError, match="features=True"):
        encode_stream(omnikit.create_model("wav2vec2_tiny"), WAV, features=True)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("video") / "v.mp4"
    write_synthetic_video(path, num_frames=48, fps=8, size=(32, 48), gop=6)
    return str(path)


@pytest.mark.parametrize("name", ["qwen2_5_omni_vision_tiny", "qwen3_vit_tiny", "frame_encoder_tiny"])
def test_video_windows_equal_one_pass(name: str, video: str) -> None:
    path = video
    encoder = omnikit.create_model(name).eval()
    clip = load_video(path, fps=1.0, strategy="fps", size=(32, 32))
    with torch.no_grad():
        want = encoder(clip.frames.float()[None] / 255).hidden_states[0]
    pieces = list(stream_encode_video(encoder, path, fps=1.0, size=(32, 32), window_frames=5))
    assert len(clip.frames) == 6 and len(pieces) == 2  # windows of 5 frames, or of 4 (whole two-frame steps)
    _close(torch.cat(pieces), want)
    with pytest.raises(TypeError, match="temporal step"):
        encode_video_stream(torch.nn.Linear(2, 2), path)


def test_grad_mode_is_not_held_between_pieces(video: str) -> None:
    encoder = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    stream = stream_encode(encoder, WAV, chunk_seconds=2.0)
    assert not next(stream).requires_grad and torch.is_grad_enabled()
    frames = stream_encode_video(omnikit.create_model("frame_encoder_tiny").eval(), video, fps=1.0, size=(32, 32))
    assert not next(frames).requires_grad and torch.is_grad_enabled()
