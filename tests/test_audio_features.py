"""Audio frontends: Whisper log-mel parity, length bookkeeping, edge cases, resampling, kaldi fbank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnikit.audio import (
    LogMelSpectrogram,
    kaldi_fbank,
    log_mel_spectrogram,
    mel_filterbank,
    resample,
    to_mono,
)

transformers = pytest.importorskip("transformers")


def speechlike(samples: int, seed: int) -> torch.Tensor:
    """A chirp with an amplitude envelope plus a little noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    tone = torch.sin(2 * torch.pi * (200 + 900 * t) * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return 0.5 * tone + 0.01 * torch.randn(samples, generator=g)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filterbank_matches_torchaudio_and_transformers(n_mels: int) -> None:
    import torchaudio
    from transformers.audio_utils import mel_filter_bank

    ours = mel_filterbank(201, n_mels, 16000)
    ta = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, n_mels, 16000, norm="slaney", mel_scale="slaney")
    hf = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
                         sampling_rate=16000, norm="slaney", mel_scale="slaney")
    torch.testing.assert_close(ours, ta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours, torch.from_numpy(hf).float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n_mels,seed", [(80, 0), (128, 1)])
def test_log_mel_matches_whisper_feature_extractor(n_mels: int, seed: int) -> None:
    """A clip of random (odd) length, padded to 30 s by the reference and by us."""
    samples = int(torch.randint(16000, 5 * 16000, (1,), generator=torch.Generator().manual_seed(seed))) | 1
    clip = speechlike(samples, seed)
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    expected = extractor(clip.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    padded = torch.zeros(1, 480000)
    padded[0, :samples] = clip
    ours, frames = log_mel_spectrogram(padded, sample_rate=16000, n_mels=n_mels)
    assert ours.shape == expected.shape == (1, n_mels, 3000) and frames.tolist() == [3000]
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-5)
    # the unpadded clip gives the same leading frames with exact length bookkeeping
    alone, alone_frames = log_mel_spectrogram(clip, sample_rate=16000, n_mels=n_mels)
    assert alone_frames.tolist() == [samples // 160]
    torch.testing.assert_close(alone, expected[..., : samples // 160], atol=2e-5, rtol=1e-5)


def test_batch_with_lengths_equals_items_alone_and_padding_is_zero() -> None:
    lengths = torch.tensor([16000 * 2 + 77, 1601, 160 * 33])
    wav = torch.randn(3, 1, int(lengths.max())) * 10  # loud garbage in the padding
    for b, n in enumerate(lengths.tolist()):
        wav[b, 0, :n] = speechlike(n, b)
    mel, frames = log_mel_spectrogram(wav, sample_rate=16000, lengths=lengths)
    assert frames.tolist() == (lengths // 160).tolist()
    for b, n in enumerate(lengths.tolist()):
        alone, _ = log_mel_spectrogram(wav[b : b + 1, :, :n], sample_rate=16000)
        torch.testing.assert_close(mel[b : b + 1, :, : frames[b]], alone, atol=1e-5, rtol=1e-5)
        assert bool((mel[b, :, frames[b] :] == 0).all())


def test_silence_is_the_documented_constant() -> None:
    mel, _ = log_mel_spectrogram(torch.zeros(2, 3200), sample_rate=16000)
    assert torch.equal(mel, torch.full_like(mel, -1.5))


@pytest.mark.parametrize(
    "wav,kwargs,match",
    [
        (torch.randn(2, 2, 1600), {}, "1 channel"),
        (torch.randn(1, 1600), {"sample_rate": 44100}, "resample"),
        (torch.randn(1, 0), {}, "at least one sample"),
        (torch.randn(1, 100), {}, "hop_length"),
        (torch.tensor([[0.0, float("nan")] * 800]), {}, "NaN"),
        (torch.randint(0, 3, (1, 1600)), {}, "floating"),
    ],
)
def test_bad_waveforms_raise_naming_the_argument(wav: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        log_mel_spectrogram(wav, **{"sample_rate": 16000, **kwargs})


def test_lengths_out_of_range_raise() -> None:
    with pytest.raises(ValueError, match="lengths"):
        LogMelSpectrogram()(torch.randn(2, 1600), torch.tensor([1600, 1601]))


def test_to_mono_and_resample_lengths() -> None:
    stereo = torch.randn(2, 2, 441)
    assert torch.equal(to_mono(stereo), stereo.mean(1, keepdim=True))
    wav, lengths = resample(to_mono(stereo), 44100, 16000, torch.tensor([441, 300]))
    assert wav.shape == (2, 1, 160) and lengths.tolist() == [160, 109]
    sine = torch.sin(2 * torch.pi * 440 * torch.arange(48000) / 48000)[None, None]
    down, _ = resample(sine, 48000, 16000)
    expected = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    torch.testing.assert_close(down[0, 0, 200:-200], expected[200:-200], atol=2e-3, rtol=0)


def test_kaldi_fbank_matches_torchaudio_per_item() -> None:
    import torchaudio

    lengths = torch.tensor([16000, 4321])
    wav = torch.randn(2, 1, 16000) * 3000
    feats, frames = kaldi_fbank(wav, sample_rate=16000, lengths=lengths)
    assert frames.tolist() == [1 + (16000 - 400) // 160, 1 + (4321 - 400) // 160]
    for b, n in enumerate(lengths.tolist()):
        item = wav[b, :, :n]
        expected = torchaudio.compliance.kaldi.fbank(item, sample_frequency=16000, dither=0.0, num_mel_bins=80).T
        torch.testing.assert_close(feats[b, :, : frames[b]], expected)
    with pytest.raises(ValueError, match="fewer than one kaldi frame"):
        kaldi_fbank(torch.randn(1, 300), sample_rate=16000)


def test_log_mel_module_accepts_numpy_converted_audio() -> None:
    clip = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    mel, frames = LogMelSpectrogram(128)(torch.from_numpy(clip))
    assert mel.shape == (1, 128, 50) and frames.tolist() == [50]


@pytest.mark.parametrize("amplitude", [1e15, 1e18, 1e30, 1e37])
def test_huge_amplitudes_give_finite_exactly_shifted_features(amplitude: float) -> None:
    """Scaling audio by ``a`` shifts every log-mel value by ``log10(a**2) / 4`` (the max - 8 floor moves with
    it); amplitudes where the float32 power spectrum would overflow give that too, not NaN."""
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    ref, _ = log_mel_spectrogram(wav, sample_rate=16000, n_mels=80)
    mel, _ = log_mel_spectrogram(wav * amplitude, sample_rate=16000, n_mels=80)
    assert torch.isfinite(mel).all()
    torch.testing.assert_close(mel - ref, torch.full_like(ref, math.log10(amplitude**2) / 4), atol=2e-5, rtol=0)
