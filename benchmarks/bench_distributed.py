"""Bytes communicated per training step by each parallel strategy, measured vs the analytic count.

Run: ``python benchmarks/bench_distributed.py``. Spawns gloo CPU processes (world 2, then 4), runs
one warm-up and one measured forward+backward per strategy under
:class:`omnikit.distributed.comm.CommBytesMode` (``CommDebugMode`` plus a byte tally), averages the
bytes over ranks and prints a markdown table next to the count derived from the model's shapes:

- FSDP: every unit all-gathered in forward and again in backward (the root only once), every
  gradient reduce-scattered: ``4 B x (2 P_units + P_root)`` gathered + ``4 B x P`` reduced;
- DDP (``replicate``): one all-reduce of every gradient, ``4 B x P``;
- HSDP: FSDP over ``dp_shard`` plus an all-reduce of the reduced shards over ``dp_replicate``;
- TP (this plan, attention split by heads): per token and layer, all-reduces of ``dim`` floats
  (forward: attention output and MLP down projection, after the embedding; backward: the inputs of
  q/k/v, gate and up, before the LM head), the logits' all-gather (forward), and per layer the
  all-reduce of the q and k norms' weight gradients (``head_dim`` floats each, backward); with
  routed experts split over their width, per MoE layer one all-reduce of the output (forward) and
  two in the backward: the experts' input (``dim`` floats per token) and the routing weights (one
  float per routed row);
- EP: per MoE layer, ``E`` int64 counts, then every routed row (``tokens x top_k x dim`` floats)
  dispatched and combined, forward and backward (4 all-to-alls).

Tiny models (decoder_tiny; a 2-layer MoE LM of 8 experts, top-2), batch 2 x 8 tokens per data rank.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from common import format_table
from torch import nn

import omnikit
from omnikit.distributed import build_mesh, collect_plan, data_parallel_coords, parallelize
from omnikit.distributed.comm import CommBytesMode
from omnikit.distributed.tp import tp_sharded_parameters
from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.moe import MoE, MoEConfig

BATCH, TOKENS, F32 = 2, 8, 4
STRATEGIES = {  # name -> (model, mesh sizes)
    2: [("dp_replicate (DDP)", "dense", {"dp_replicate": 2}), ("dp_shard (FSDP)", "dense", {"dp_shard": 2}),
        ("tp", "dense", {"tp": 2}), ("tp (MoE, experts split)", "moe", {"tp": 2}), ("ep", "moe", {"ep": 2})],
    4: [("HSDP 2x2", "dense", {"dp_replicate": 2, "dp_shard": 2}),
        ("dp_shard x tp 2x2", "dense", {"dp_shard": 2, "tp": 2}),
        ("dp_shard x ep 2x2", "moe", {"dp_shard": 2, "ep": 2})],
}


def build(kind: str) -> CausalLM:
    torch.manual_seed(0)
    if kind == "dense":
        return omnikit.create_model("decoder_tiny")
    config = DecoderConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, vocab_size=64, rope_base=10000.0)
    return CausalLM(config, lambda i: MoE(MoEConfig(32, 8, 2, 16)))


def numel(params: list[nn.Parameter], sharded: set[int], factor: int) -> int:
    return sum(p.numel() // (factor if id(p) in sharded else 1) for p in params)


def analytic(model: CausalLM, sizes: dict[str, int]) -> int:
    """Bytes per rank per step from the shapes (see the module docstring)."""
    plan, cfg = collect_plan(model), model.config
    tp, ep = sizes.get("tp", 1), sizes.get("ep", 1)
    experts = {id(p) for e in plan.experts for p in e.parameters()}
    tp_sharded = tp_sharded_parameters(model, plan) if tp > 1 else set()
    seen: set[int] = set(experts) if ep > 1 else set()
    units = []
    for unit in [*plan.fsdp_units, model]:
        params = [p for p in unit.parameters() if id(p) not in seen]
        seen |= {id(p) for p in params}
        units.append(numel(params, tp_sharded, tp))
    total, root = sum(units), units[-1]
    tokens = BATCH * TOKENS
    out = 0
    if "dp_shard" in sizes or "ep" in sizes:
        out += F32 * (2 * (total - root) + root) + F32 * total
    if "dp_replicate" in sizes:
        out += F32 * (total // sizes.get("dp_shard", 1))
    if ep > 1:
        layers = plan.experts
        routed = tokens * model.decoder.blocks[0].mlp.config.top_k
        out += len(layers) * (8 * layers[0].num_experts + 4 * F32 * routed * cfg.dim)
        if "dp_shard" in sizes:
            per_layer = sum(p.numel() for p in layers[0].parameters()) // ep
            out += len(layers) * F32 * 3 * per_layer
    if tp > 1:
        head_dim = cfg.head_dim or cfg.dim // cfg.num_heads
        depth = cfg.depth
        mlp_inputs = 1 if plan.experts else 2  # backward: the experts' input, or the gate's and the up's
        all_reduce = (1 + 2 * depth) + (depth * (1 + mlp_inputs) + 1)  # forward + backward
        out += F32 * tokens * (all_reduce * cfg.dim + cfg.vocab_size)
        out += F32 * depth * 2 * head_dim * cfg.qk_norm
        if plan.experts:  # backward: the routing weights' gradient, one float per routed row
            out += F32 * depth * tokens * model.decoder.blocks[0].mlp.config.top_k
    return out


def worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}",
                            timeout=timedelta(seconds=120))
    rows = []
    for name, kind, sizes in STRATEGIES[world]:
        model = build(kind)
        expected = analytic(model, sizes)
        mesh = build_mesh("cpu", **sizes)
        parallelize(model, mesh)
        index, _ = data_parallel_coords(mesh)
        ids = torch.randint(0, model.config.vocab_size, (BATCH, TOKENS), generator=torch.Generator().manual_seed(index))
        for _ in range(2):  # a warm-up step, then the measured one (the last `comm`)
            with CommBytesMode() as comm:
                logits = model(ids)
                F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        measured = torch.tensor(float(comm.total_bytes))
        dist.all_reduce(measured)
        counts = Counter({str(op).split(".")[-1]: n for op, n in comm.get_comm_counts().items()})
        kinds = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
        mean = measured.item() / world
        rows.append([name, world, kinds, f"{mean / 1024:.1f}", f"{expected / 1024:.1f}", f"{mean / expected:.3f}"])
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def main() -> None:
    rows = []
    for world in (2, 4):
        with socket.socket() as s, tempfile.TemporaryDirectory() as tmp:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            out = str(Path(tmp) / "rows.json")
            mp.spawn(worker, args=(world, port, out), nprocs=world)
            rows += json.loads(Path(out).read_text())
    headers = ["strategy", "world", "collectives per step (per rank)", "measured KiB/rank", "analytic KiB/rank",
               "measured / analytic"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
