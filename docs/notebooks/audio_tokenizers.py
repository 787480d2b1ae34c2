# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Audio tokenizers compared
#
# The registry's codecs share one interface (`encode(wav) -> codes (B, K, F)`, `decode(codes)`,
# `sample_rate`, `frame_rate`, `num_codebooks`, `codebook_size`). Here they tokenize the same
# speech-like sound; we compare code layouts, bitrates and reconstructions. Weights are random, so
# the reconstructions show the plumbing, not the quality of trained codecs. (`mimi_style_codec`,
# 12.5 frames/s with split RVQ, has the same interface; it is left out to keep this page fast.)

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import torch

import omnikit
from omnikit.audio import log_mel_spectrogram, resample
from omnikit.fusion.models import tiny_speech_codec

torch.manual_seed(0)
print(omnikit.list_models(kind="codec"))

# %%
rate, seconds = 16000, 0.5
t = torch.arange(int(rate * seconds)) / rate
pitch = 140 + 40 * torch.sin(2 * torch.pi * 2 * t)
phase = torch.cumsum(pitch / rate, 0)
wav = sum(torch.sin(2 * torch.pi * k * phase) / k for k in range(1, 12))
wav = (0.3 * wav / wav.abs().max()).float()

codecs = {
    "seanet_codec_tiny": omnikit.create_model("seanet_codec_tiny"),
    "thinker_talker_tiny's codec": tiny_speech_codec(4, 64),
    "seanet_codec_24khz": omnikit.create_model("seanet_codec_24khz"),
}

# %% [markdown]
# ## Codes and bitrate
# Bitrate = frames/s x codebooks x log2(codebook size).

# %%
results = {}
for name, codec in codecs.items():
    codec.eval()
    x, _ = resample(wav[None, None], rate, codec.sample_rate)
    with torch.no_grad():
        codes = codec.encode(x)
        y = codec.decode(codes)[..., : x.shape[-1]]
    kbps = codec.frame_rate * codec.num_codebooks * math.log2(codec.codebook_size) / 1000
    results[name] = (codes, resample(y, codec.sample_rate, rate)[0][0, 0])
    print(f"{name:>28}: {codec.sample_rate} Hz, {codec.frame_rate:g} frames/s, {codec.num_codebooks} x "
          f"{codec.codebook_size} codes, {kbps:.2f} kbps, codes {tuple(codes.shape)}")

# %% [markdown]
# ## The codes of each tokenizer

# %%
fig, axes = plt.subplots(1, len(results), figsize=(14, 2.6))
for ax, (name, (codes, _)) in zip(axes, results.items()):
    ax.imshow(codes[0, :, :64].numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("frame")
    ax.set_ylabel("codebook")
fig.tight_layout()

# %% [markdown]
# ## Reconstructions: log-mel of the input and of each decoded waveform

# %%
fig, axes = plt.subplots(1, len(results) + 1, figsize=(15, 2.6))
mels = {"input": wav} | {name: y for name, (_, y) in results.items()}
for ax, (name, signal) in zip(axes, mels.items()):
    n = min(len(signal), len(wav))
    mel, _ = log_mel_spectrogram(signal[None, :n], sample_rate=rate)
    ax.imshow(mel[0].numpy(), origin="lower", aspect="auto")
    ax.set_title(name, fontsize=8)
fig.tight_layout()
for name, (_, y) in results.items():
    n = min(len(y), len(wav))
    a, _ = log_mel_spectrogram(wav[None, :n], sample_rate=rate)
    b, _ = log_mel_spectrogram(y[None, :n], sample_rate=rate)
    print(f"{name:>28}: log-mel L1 to the input {float((a - b).abs().mean()):.3f} (random weights)")
