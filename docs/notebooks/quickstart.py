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
# # Quickstart
#
# Build an omni model from the registry, feed it a batch of mixed media made by the processor,
# and read its outputs. Weights are random here (no network); load real ones with
# `omnikit.create_model(name, pretrained=DIR)` or `omnikit.convert.load_hf(path)`.

# %%
import torch

import omnikit
from omnikit.data import OmniProcessor
from omnikit.utils.summary import model_summary

torch.manual_seed(0)
print(len(omnikit.list_models()), "registered models;", "omni:", omnikit.list_models(kind="omni"))

# %% [markdown]
# ## One early-fusion omni model
# `omni_early_tiny`: a tubelet video encoder and a Qwen2.5-Omni-style audio encoder feed a
# 2-layer Thinker through placeholder tokens and TMRoPE positions.

# %%
model = omnikit.create_model("omni_early_tiny").eval()
print(model_summary(model))

# %% [markdown]
# ## A batch from raw samples
# Each `<audio>` / `<video>` / `<image>` marker becomes a run of placeholders exactly as long as the
# encoder's output for that item.

# %%
samples = [
    {"text": "<video> what moves? <audio> and this?", "videos": [torch.rand(12, 3, 24, 32)],
     "audios": [0.1 * torch.randn(12000)]},
    {"messages": [{"role": "user", "content": "<image> describe"}, {"role": "assistant", "content": "a cat"}],
     "images": [torch.rand(3, 16, 16)]},
]
processor = OmniProcessor(model, num_frames=4, size=(16, 16))
batch = processor(samples)
print("input_ids", tuple(batch.input_ids.shape), "frames", tuple(batch.frames.shape),
      "audio_features", tuple(batch.audio_features.shape))
print("video grids (t, h, w):", batch.grids, "audio tokens:", batch.audio_tokens)

# %%
with torch.no_grad():
    logits = model(**batch.model_inputs())
print("logits", tuple(logits.shape))

# %% [markdown]
# ## Generate
# Greedy continuation of the first sample's prompt.

# %%
first = processor(samples[:1])
with torch.no_grad():
    out = model.generate(first.input_ids, frames=first.frames, audio_features=first.audio_features,
                         audio_lengths=first.audio_lengths, max_new_tokens=6)
print("new tokens:", out.tokens.tolist())
