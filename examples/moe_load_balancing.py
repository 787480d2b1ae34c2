"""Auxiliary-loss-free load balancing (DeepSeek-V3) on a deliberately skewed router, plotted.

    python examples/moe_load_balancing.py docs/img/moe_bias_balancing.png

A sigmoid-scored MoE whose router favours a few experts is balanced by nudging its selection bias
after each step with the routing statistics the layer returns (``moe(x, return_aux=True)``):
nothing is stored on the module except the bias buffer itself.
"""

from __future__ import annotations

import argparse

import torch

from omnikit.moe import MoE, MoEConfig, plot_expert_load


def main(path: str = "moe_bias_balancing.png") -> None:
    torch.manual_seed(0)
    moe = MoE(MoEConfig(dim=64, num_experts=16, top_k=2, expert_hidden=32, scoring="sigmoid", balance_bias=True))
    with torch.no_grad():
        moe.router.weight[:3] += 0.3  # experts 0..2 are everybody's favourites
    x = torch.randn(4096, 64)
    with torch.no_grad():
        before = moe(x, return_aux=True)[1].tokens_per_expert
        for _ in range(300):
            batch = x[torch.randint(0, x.shape[0], (512,))]
            moe.update_bias(moe(batch, return_aux=True)[1].tokens_per_expert, rate=2e-3)
        after = moe(x, return_aux=True)[1].tokens_per_expert
    print("max/mean load before:", round(float(before.max() / before.float().mean()), 2),
          "after:", round(float(after.max() / after.float().mean()), 2))
    plot_expert_load([before, after], path, labels=["skewed router", "after 300 bias updates"],
                     title="Auxiliary-loss-free balancing (16 experts, top-2)")
    print("plot:", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="moe_bias_balancing.png", help="where the plot goes")
    main(parser.parse_args().path)
