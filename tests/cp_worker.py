"""Context-parallel scenarios on gloo (launched by tests/test_context_parallel.py): loss and gradients
of a model under ``parallelize`` with a ``"cp"`` mesh dimension against one process.

Usage: ``python tests/cp_worker.py WORLD PORT OUT_DIR CASE/MESH ...``; rank 0 writes ``OUT_DIR/cp_WORLD.json``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

import omnikit
from omnikit.convert import load_hf
from omnikit.distributed import build_mesh, data_parallel_coords, data_shard, parallelize
from omnikit.distributed.cp import cp_media_rows, cp_positions
from omnikit.fusion import MediaTokens, Thinker
from omnikit.fusion.omni_prompt import OmniPrompt, collate_prompts
from omnikit.layers import DecoderConfig, attention_blockwise
from omnikit.models import CausalLM
from omnikit.moe import MoE, MoEConfig

VOCAB, LENGTH, AUDIO = 64, 16, 3
#: calls of the mask-free causal attention (omnikit.layers.attention_blockwise), counted by a wrapper of its plan
BLOCK_CALLS = [0]
_plan = attention_blockwise._plan


def _counted_plan(*args, **kwargs):
    BLOCK_CALLS[0] += 1
    return _plan(*args, **kwargs)


attention_blockwise._plan = _counted_plan
MESHES = {"cp": {"cp": 2}, "cp4": {"cp": 4}, "dp_shard_x_cp": {"dp_shard": 2, "cp": 2}}


class MediaThinker(nn.Module):
    """An M-RoPE Thinker fed by a linear audio "encoder": ``media`` rows are the encoder's inputs."""

    def __init__(self) -> None:
        super().__init__()
        config = DecoderConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, vocab_size=VOCAB, mrope_sections=(2, 1, 1))
        self.thinker = Thinker(config, media_tokens=MediaTokens(audio=AUDIO))
        self.encoder = nn.Linear(8, 32)

    def forward(self, ids: torch.Tensor, *, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.thinker(ids, media={"audio": self.encoder(features)}, positions=positions)


def thinker_inputs(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Audio placeholders at positions 2-6 of every row (across the first shard boundary at cp 2 and
    4), their features, and (3, B, T) M-RoPE ids whose three axes differ."""
    ids = inputs.masked_fill(inputs == AUDIO, AUDIO + 1)
    ids[:, 2:7] = AUDIO
    features = torch.randn(int((ids == AUDIO).sum()), 8, generator=torch.Generator().manual_seed(2))
    t = torch.arange(ids.shape[1]).expand_as(ids)
    return ids, features, torch.stack((t, t // 2, (t * 3) % 5))


#: The omni Thinkers fed whole processor-style prompts: a checkpoint the test saved (tiny random transformers
#: model) or a registered tiny model.
OMNI = {"omni": "omni_thinker", "qwen3_omni": "qwen3_omni_thinker", "qwen3_5_vl": "qwen3_5_vl_tiny",
        "qwen3_5_omni": "qwen3_5_omni_tiny"}


def build(case: str, out_dir: str) -> nn.Module:
    if case in ("omni", "qwen3_omni"):  # the tiny random transformers Thinker checkpoints the test saved
        return load_hf(Path(out_dir, OMNI[case]))
    if case.startswith("qwen3_5"):
        model = omnikit.create_model(OMNI[case])
        return getattr(model, "thinker", model)  # qwen3_5_omni_tiny speaks: its Thinker
    if case == "thinker":
        return MediaThinker()
    if case == "hybrid":
        return omnikit.create_model("hybrid_moe_tiny")
    config = DecoderConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, vocab_size=VOCAB)
    if case == "moe":
        return CausalLM(config, mlp_factory=lambda i: MoE(MoEConfig(dim=32, num_experts=4, top_k=2, expert_hidden=16)))
    return CausalLM(config)


def prompt_batch(model: nn.Module, multiple: int) -> dict[str, torch.Tensor]:
    """Two unpadded rows of equal length (a multiple of ``multiple``) built by the model's own prompt writer:
    row 0 an image, an audio clip (if the model hears) and a video, row 1 a video and an image; every item
    is 6 to 12 tokens long, so the shard boundaries (every ``length / (2 * cp)``) cut through items. A video
    step of a Qwen3.5 model is its own run after a timestamp (its processor's layout)."""
    g = torch.Generator().manual_seed(3)
    c = model.vision_encoder.config
    unit, hears = c.patch[1] * c.merge_size, model.audio_encoder is not None
    steps = {"step_text": 1} if not hears else {}
    first = OmniPrompt(model, generator=g).text(3).image(2 * unit, 3 * unit).text(2)
    if hears:
        first.audio(30).text(1)
    first.video(4, 2 * unit, 2 * unit, seconds_per_step=0.5, **steps).text(2)
    second = OmniPrompt(model, generator=g).text(2).video(4, 2 * unit, 2 * unit, **steps).text(1)
    second.image(3 * unit, 2 * unit).text(2)
    length = -(-max(len(first.ids), len(second.ids)) // multiple) * multiple
    for prompt in (first, second):
        prompt.text(length - len(prompt.ids))
    batch = collate_prompts([first, second])
    assert batch.pop("attention_mask").all()
    return batch


def count_patch_rows(model: nn.Module) -> list[int]:
    """The patch rows each call of ``model``'s vision tower encodes, appended to the returned list."""
    rows: list[int] = []
    visual = model._visual

    def counted(pixels: torch.Tensor, grids):
        rows.append(pixels.shape[0])
        return visual(pixels, grids)

    model._visual = counted
    return rows


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of every position against its target (next-token targets made globally)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")


def full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
            for n, p in model.named_parameters() if p.grad is not None}


def run(case: str, sizes: dict[str, int], out_dir: str) -> dict:
    block_calls_before = BLOCK_CALLS[0]
    torch.manual_seed(0)
    model = build(case, out_dir)
    reference = copy.deepcopy(model)
    mesh = build_mesh("cpu", **sizes)
    _, data_ranks = data_parallel_coords(mesh)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2 * data_ranks, LENGTH + 1), generator=g)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    index = cp_positions(LENGTH, mesh["cp"])
    extra = {}
    if case == "hybrid":  # embeddings in, a squared error against random targets
        inputs, targets = (torch.randn(2 * data_ranks, LENGTH, 32, generator=g) for _ in "xy")
        ref_out = reference(inputs)
        parallelize(model, mesh)
        out = model(data_shard(inputs, mesh)[:, index], positions=index)  # hidden states here
    elif case == "thinker":  # media split at the shard boundary, positions sliced per shard
        inputs, features, positions = thinker_inputs(inputs)
        ref_out = reference(inputs, features=features, positions=positions)
        mine = data_shard(inputs, mesh)
        first = data_parallel_coords(mesh)[0] * mine.shape[0]  # this shard's first item in the batch
        before = int((inputs[:first] == AUDIO).sum())
        rows = before + cp_media_rows(mine == AUDIO, index)
        local_pos = positions[:, first : first + mine.shape[0]][..., index]
        parallelize(model, mesh)
        out = model(mine[:, index], features=features[rows], positions=local_pos)
    elif case in OMNI:  # processor inputs whose media items cross shard boundaries (cp only)
        media = torch.load(Path(out_dir, "omni_batch.pt")) if case == "omni" else prompt_batch(model, 8)
        inputs = media.pop("input_ids")
        targets = torch.randint(0, model.output_dim, inputs.shape, generator=g)
        index = cp_positions(inputs.shape[1], mesh["cp"])
        ref_out = reference(inputs, **media)
        parallelize(model, mesh)
        encoded = count_patch_rows(model)
        out = model(inputs, **media)  # the whole prompt in, this rank's positions out
        # this rank's share of the vision tower's work: its round-robin items (plus a dummy step where none)
        total = sum(media[k].shape[0] for k in ("pixel_values", "pixel_values_videos") if k in media)
        share = torch.tensor([sum(encoded) / total])
        dist.all_reduce(share, op=dist.ReduceOp.MAX)
        extra["vision_share"] = float(share)
    else:
        ref_out = reference(inputs)
        parallelize(model, mesh)
        out = model(data_shard(inputs, mesh)[:, index], positions=index)
    count = targets.numel()
    loss = (lambda o, t: (o - t).square().sum()) if case == "hybrid" else token_losses
    ref_loss = loss(ref_out, targets) / count
    local = loss(out, data_shard(targets, mesh)[:, index])
    # the prefill: each rank's outputs are the one-process outputs at its positions
    want_out = data_shard(ref_out.detach(), mesh)[:, index]
    out_rel = float((out.detach() - want_out).norm() / want_out.norm())
    ref_loss.backward()
    shards = data_ranks * mesh["cp"].size()  # FSDP averages the gradients over these ranks
    (local * shards / count).backward()
    total = local.detach().clone()
    dist.all_reduce(total)
    got, want = full_grads(model), full_grads(reference)
    return {
        "loss_rel": abs(float(total) / count - ref_loss.item()) / abs(ref_loss.item()),
        "out_rel": out_rel,
        "grad_rel": max(float((got[n] - want[n]).norm() / want[n].norm().clamp(min=1e-12)) for n in want),
        "worst": max(want, key=lambda n: float((got[n] - want[n]).norm() / want[n].norm().clamp(min=1e-12))),
        "missing_grads": sorted(set(want) - set(got)),
        "local_positions": index.tolist(),
        "block_calls": BLOCK_CALLS[0] - block_calls_before,  # mask-free attention calls (forward and backward)
        **extra,
    }


def guarded(name: str, out_dir: str) -> dict:
    """One scenario's result, or its traceback (the test fails on it); every rank then meets at a barrier."""
    case, mesh_name = name.split("/")
    try:
        return run(case, MESHES[mesh_name], out_dir)
    except Exception:
        return {"error": traceback.format_exc()}
    finally:
        dist.barrier()


def worker(rank: int, world: int, port: int, out_dir: str, names: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}",
                            timeout=timedelta(seconds=60))
    results = {name: guarded(name, out_dir) for name in names}
    if rank == 0:
        Path(out_dir, f"cp_{world}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    mp.spawn(worker, args=(world, port, out, sys.argv[4:]), nprocs=world)
