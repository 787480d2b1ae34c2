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
# # Build your own omni model from registry parts
#
# Pick an audio encoder, a video path and a language decoder from the registry, wire them with
# adapters into an early-fusion model, and check it with the same processor the registered models use.

# %%
import dataclasses

import torch

import omnikit
from omnikit.data import OmniProcessor
from omnikit.fusion import (
    QWEN2_5_OMNI,
    AudioAdapter,
    EarlyFusionOmni,
    MediaTokens,
    Thinker,
    TubeletEncoder,
    VideoAdapter,
)
from omnikit.layers.decoder import DecoderConfig
from omnikit.utils.summary import format_count

torch.manual_seed(0)
print("audio encoders:", omnikit.list_models("*tiny", kind="audio_encoder"))

# %% [markdown]
# ## The parts
# A Whisper-style audio encoder from the registry, a ViViT-style tubelet encoder for video, and a
# 2-layer Thinker with M-RoPE sections matching the TMRoPE scheme.

# %%
audio_encoder = omnikit.create_model("whisper_encoder_tiny")
tokens = MediaTokens(image=1, video=2, audio=3)
sections = (2, 3, 3)
thinker = Thinker(DecoderConfig(dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, vocab_size=256,
                                mrope_sections=sections), media_tokens=tokens)
model = EarlyFusionOmni(
    thinker,
    audio=AudioAdapter(audio_encoder, dim=64),
    video=VideoAdapter(TubeletEncoder(48, patch=4, tubelet=2), dim=64, fps=2.0),
    scheme=dataclasses.replace(QWEN2_5_OMNI, sections=sections),
).eval()
print(format_count(omnikit.count_parameters(model)), "parameters")

# %% [markdown]
# ## Run it
# The processor reads the encoders' own token counts (`model.audio.encoder.output_lengths`,
# `model.video.grid`), so placeholder runs always match.

# %%
processor = OmniProcessor(model, num_frames=4, size=(16, 16))
batch = processor([{"text": "<audio> then <video> ?", "audios": [0.1 * torch.randn(16000)],
                    "videos": [torch.rand(8, 3, 16, 16)]}])
with torch.no_grad():
    logits = model(**batch.model_inputs())
print("audio tokens", batch.audio_tokens, "video grid", batch.grids, "logits", tuple(logits.shape))

# %% [markdown]
# ## Swap one block
# Replace the audio encoder by the Qwen2.5-Omni-style windowed one: nothing else changes.

# %%
model.audio = AudioAdapter(omnikit.create_model("qwen2_5_omni_audio_tiny"), dim=64)
batch = OmniProcessor(model, num_frames=4, size=(16, 16))(
    [{"text": "<audio> then <video> ?", "audios": [0.1 * torch.randn(16000)], "videos": [torch.rand(8, 3, 16, 16)]}]
)
with torch.no_grad():
    print("audio tokens now", batch.audio_tokens, "logits", tuple(model(**batch.model_inputs()).shape))
