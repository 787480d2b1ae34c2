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
# # MoE routing and load balancing
#
# A MoE layer called as `moe(x)` returns a tensor of `x`'s shape; `moe(x, return_aux=True)` also
# returns its routing statistics and auxiliary losses (nothing is stored on the module). We look
# at the load per expert of a skewed router, balance it with the Switch auxiliary loss, and with
# DeepSeek-V3's loss-free selection bias.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import torch

from omnikit.moe import MoE, MoEConfig

torch.manual_seed(0)
x = torch.randn(2048, 32)


def skewed(config: MoEConfig) -> MoE:
    moe = MoE(config)
    with torch.no_grad():
        moe.router.weight[:2] += 0.4  # experts 0 and 1 are everybody's favourites
    return moe


def load(moe: MoE) -> torch.Tensor:
    with torch.no_grad():
        _, aux = moe(x, return_aux=True)
    return aux.tokens_per_expert.float()


# %% [markdown]
# ## Routing statistics of a skewed router

# %%
moe = skewed(MoEConfig(dim=32, num_experts=8, top_k=2, expert_hidden=32))
out, aux = moe(x, return_aux=True)
print("output", tuple(out.shape), "tokens per expert", aux.tokens_per_expert.tolist())
print(f"load-balancing loss {float(aux.load_balancing_loss):.3f}, router z-loss {float(aux.z_loss):.3f}")
before = load(moe)

# %% [markdown]
# ## Balancing with the auxiliary loss
# Train only the router on the load-balancing loss (a real run adds it to the task loss).

# %%
opt = torch.optim.Adam(moe.router.parameters(), lr=5e-2)
for _ in range(40):
    _, aux = moe(x[torch.randint(0, len(x), (512,))], return_aux=True)
    opt.zero_grad()
    aux.load_balancing_loss.backward()
    opt.step()
after_aux = load(moe)

# %% [markdown]
# ## Loss-free balancing with a selection bias (DeepSeek-V3)

# %%
biased = skewed(MoEConfig(dim=32, num_experts=8, top_k=2, expert_hidden=32, scoring="sigmoid", balance_bias=True))
biased_before = load(biased)
with torch.no_grad():
    for _ in range(100):
        _, aux = biased(x[torch.randint(0, len(x), (512,))], return_aux=True)
        biased.update_bias(aux.tokens_per_expert, rate=5e-3)
after_bias = load(biased)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
experts = torch.arange(8)
for ax, (title, curves) in zip(axes, {
    "softmax router + aux loss": {"skewed": before, "after 40 router steps": after_aux},
    "sigmoid router + selection bias": {"skewed": biased_before, "after 100 bias updates": after_bias},
}.items()):
    for i, (label, counts) in enumerate(curves.items()):
        ax.bar(experts + 0.4 * i, counts, width=0.4, label=label)
    ax.axhline(len(x) * 2 / 8, color="k", lw=0.8, ls="--")
    ax.set_title(title)
    ax.set_xlabel("expert")
    ax.legend()
axes[0].set_ylabel("tokens")
fig.tight_layout()
for name, counts in {"skewed": before, "aux loss": after_aux, "bias skewed": biased_before, "bias": after_bias}.items():
    print(f"{name:>12}: max/mean load {float(counts.max() / counts.mean()):.2f}")
