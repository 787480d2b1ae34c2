"""The omni Thinker's media towers under context parallel: each rank encodes a share of the items.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_cp_towers.py [--images 16] [--side 4]``.
``qwen3_omni_thinker_tiny`` (deepstack vision tower, AuT audio tower) on one prompt of ``--images`` images of
``side x side`` merged tokens and as many 100-frame audio clips. ``cp = 1`` is one process encoding every
item; ``cp = 2, 4`` spawn that many gloo ranks, ``parallelize`` the Thinker on a ``"cp"`` mesh (FSDP over
the ranks) and encode through ``fuse``: "split", each rank encodes its round-robin share of the items
and the tokens are all-gathered, or "every rank all items" (each rank encodes everything: cp before
the split), each mode in fresh processes. Measured per rank, after a
warm-up on one image and one clip: wall time of ``fuse`` (the towers) plus the backward of a loss on the
fused media tokens (the towers' backward), and the growth of the peak resident memory over it; the
table gives the worst rank. Each rank runs one thread: on a machine with fewer free cores than ranks
the times include contention.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_prefill import peak_mib
from common import format_table

import omnikit
from omnikit.distributed import build_mesh, parallelize
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts


def batch(model: torch.nn.Module, images: int, side: int) -> dict:
    """One unpadded row: ``images`` images and as many audio clips, text between, length a multiple of 8."""
    c = model.vision_encoder.config
    unit = c.patch[1] * c.merge_size
    prompt = OmniPrompt(model, generator=torch.Generator().manual_seed(0)).text(2)
    for _ in range(images):
        prompt.image(side * unit, side * unit).text(1).audio(100).text(1)
    prompt.text(-len(prompt.ids) % 8)
    out = collate_prompts([prompt])
    out.pop("attention_mask")
    return out


def media_loss(fused) -> torch.Tensor:
    """A scalar on every fused media token (and deepstack feature)."""
    total = torch.zeros(())
    for value in fused.media.values():
        parts = [value] if isinstance(value, torch.Tensor) else [value.hidden_states, *getattr(value, "deepstack", ())]
        total = total + sum(p.square().mean() for p in parts)
    return total if fused.absent is None else total + fused.absent


def measure(model: torch.nn.Module, images: int, side: int, repeated: bool = False) -> dict:
    """Warm up, then time the towers' forward and backward; ``repeated``: every rank encodes every item
    (the hook left off for the encoding: what cp did before the split)."""
    if repeated:
        model.context_parallel = None
    for count in (1, images):
        inputs = batch(model, count, side)
        ids = inputs.pop("input_ids")
        base, start = peak_mib(), time.perf_counter()
        media_loss(model.fuse(ids, **inputs)).backward()
        seconds = time.perf_counter() - start
    return {"delta": peak_mib() - base, "seconds": seconds}


def rank_main(rank: int, size: int, port: int, images: int, side: int, repeated: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size, init_method=f"tcp://127.0.0.1:{port}",
                            timeout=timedelta(seconds=600))
    torch.manual_seed(0)
    model = parallelize(omnikit.create_model("qwen3_omni_thinker_tiny"), build_mesh("cpu", cp=size))
    results = [None] * size
    dist.all_gather_object(results, measure(model, images, side, repeated))
    if rank == 0:
        print(json.dumps({k: max(r[k] for r in results) for k in ("delta", "seconds")}))
    dist.destroy_process_group()


def child(size: int, images: int, side: int, repeated: bool) -> None:
    if size == 1:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        print(json.dumps(measure(omnikit.create_model("qwen3_omni_thinker_tiny"), images, side)))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(size, port, images, side, repeated), nprocs=size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int, metavar="CP")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=4)
    parser.add_argument("--repeated", action="store_true", help="(child) every rank encodes every item")
    parser.add_argument("--cp", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.side, args.repeated)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    rows = []
    for size in args.cp:
        for repeated in (False, True) if size > 1 else (False,):
            command = [sys.executable, __file__, "--child", str(size), "--images", str(args.images),
                       "--side", str(args.side), *(["--repeated"] if repeated else [])]
            result = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            mode = "one process" if size == 1 else "every rank all items" if repeated else "split"
            rows.append((size, mode, f"{r['delta']:.0f}", f"{r['seconds']:.2f}"))
    print(f"torch {torch.__version__}, qwen3_omni_thinker_tiny, {args.images} images of {args.side}x{args.side} "
          f"merged tokens + {args.images} audio clips of 100 frames, one thread per rank\n")
    print(format_table(["cp", "towers", "peak memory growth per rank MiB", "towers fwd+bwd s (worst rank)"], rows))


if __name__ == "__main__":
    main()
