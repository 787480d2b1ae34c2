"""Train the tiny omni model with FSDP2 and the tiny MoE decoder with FSDP x expert parallel.

Run: ``torchrun --nproc-per-node 2 examples/train_distributed.py [--steps 5]``. Uses gloo on the
CPU, NCCL when GPUs are present (one per rank; that path is untested here). Each rank trains on
its own data: in the omni part the even ranks see only audio and the odd ranks only video, which
works because ``parallelize`` makes the early-fusion model run an absent encoder on a dummy input.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F

import omnikit
from omnikit.distributed import build_mesh, data_parallel_coords, parallelize
from omnikit.fusion.models import TINY_TOKENS


def mean_over_ranks(loss: torch.Tensor) -> float:
    """The mean of every rank's loss (gloo has no AVG reduction, so a SUM then a division)."""
    total = loss.detach().clone()
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def omni_batch(model: torch.nn.Module, index: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Two items of 16 tokens: with audio only on even data ranks, video only on odd ones."""
    g = torch.Generator().manual_seed(index)
    media = model.media_example(2, generator=g)
    if index % 2 == 0:
        media.pop("frames")
        prefix = [TINY_TOKENS.audio] * int(model.audio.encoder.output_lengths(media["audio_lengths"])[0])
    else:
        media = {"frames": media["frames"]}
        t, h, w = model.video.grid(media["frames"].shape)
        prefix = [TINY_TOKENS.video] * (t * h * w)
    ids = torch.randint(8, model.thinker.config.vocab_size, (2, 16), generator=g)
    ids[:, : len(prefix)] = torch.tensor(prefix)
    return {"input_ids": ids.to(device), **{k: v.to(device) for k, v in media.items()}}


def train_omni(steps: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("omni_early_tiny").to(device)
    mesh = build_mesh(device.type, dp_shard=dist.get_world_size())
    parallelize(model, mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    index, _ = data_parallel_coords(mesh)
    for step in range(steps):
        batch = omni_batch(model, index, device)
        logits = model(**batch)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = mean_over_ranks(loss)  # a collective: every rank calls it
        if dist.get_rank() == 0:
            print(f"omni_early_tiny  FSDP2 dp_shard={mesh.size()}  step {step}  loss {mean:.4f}")


def train_moe(steps: int, device: torch.device) -> None:
    torch.manual_seed(0)
    model = omnikit.create_model("hybrid_moe_tiny").to(device)
    world = dist.get_world_size()
    ep = 2 if world % 2 == 0 else 1
    mesh = build_mesh(device.type, dp_shard=world // ep, ep=ep)
    parallelize(model, mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    index, _ = data_parallel_coords(mesh)
    g = torch.Generator().manual_seed(100 + index)
    for step in range(steps):
        x = torch.randn(2, 16, model.config.dim, generator=g).to(device)
        out = model(x)
        loss = F.mse_loss(out[:, :-1], x[:, 1:])  # predict the next input vector
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = mean_over_ranks(loss)
        if dist.get_rank() == 0:
            print(f"hybrid_moe_tiny  FSDP x EP dp_shard={world // ep} ep={ep}  step {step}  loss {mean:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=120))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        train_omni(args.steps, device)
        train_moe(args.steps, device)
        dist.barrier()  # every rank is done before any tears its process group down (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
