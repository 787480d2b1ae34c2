"""omnikit ``load_hf`` vs transformers ``from_pretrained``: load time and peak memory, same checkpoint.

Run: ``python benchmarks/bench_load_hf.py [--layers 12] [--repeats 2] [--workdir /tmp] [--old-rev REV]``.

Writes a synthetic Qwen3-style checkpoint in the Hub layout (bf16 random weights, ~1 GB with the
defaults, shards of 400 MB plus ``model.safetensors.index.json``) from a subprocess, then loads it
in a fresh subprocess per run, alternating the two loaders. Each child reports the seconds of its
first load call (including lazy imports on first use) and of a second one, and the peak RSS of
the second (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before it:
``resource.getrusage``'s ``ru_maxrss`` can be neither reset nor trusted across ``exec``). "Extra"
is peak RSS minus the RSS before that load, compared with the bytes of the loaded tensors: right
after loading (safetensors maps files into memory, so weights not yet read are not resident)
and after reading every weight.
``--old-rev`` adds omnikit at that git revision as a third loader (a before/after table under the
same conditions). The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import format_table
from safetensors.torch import save_file

CHILD = r"""
import gc, json, resource, sys, time
import torch
import transformers
import omnikit.convert

def kib(field):  # VmHWM / VmRSS of this process image (getrusage's maxrss also counts the parent's before exec)
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def load():
    if loader == "omnikit":
        return omnikit.convert.load_hf(path, dtype=torch.bfloat16)
    if loader == "omnikit old":
        return omnikit_old.convert.load_hf(path, dtype=torch.bfloat16)
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)

def reset_peak():  # VmHWM := VmRSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

loader, path = sys.argv[1], sys.argv[2]
if loader == "omnikit old":  # extracted by bench_before_after.import_old into this folder
    sys.path.insert(0, sys.argv[3])
    import omnikit_old.convert
start = time.perf_counter()
load()
cold = time.perf_counter() - start
gc.collect()
reset_peak()
before = kib("VmRSS")
start = time.perf_counter()
model = load()
warm = time.perf_counter() - start
peak_load = kib("VmHWM")
tensors = list({t.data_ptr(): t for t in model.state_dict().values()}.values())
tensor_bytes = sum(t.numel() * t.element_size() for t in tensors)
for t in tensors:  # touch every weight: memory-mapped tensors become resident
    t.sum()
peak_touched = kib("VmHWM")
print(json.dumps({"cold": cold, "warm": warm, "before_kb": before, "peak_load_kb": peak_load,
                  "peak_touched_kb": peak_touched, "tensor_bytes": tensor_bytes}))
"""


def write_checkpoint(directory: Path, layers: int, shard_bytes: int = 400 * 10**6) -> int:
    """A Qwen3-style checkpoint (dim 1024, FFN 3072, 16 q / 8 kv heads of 128, vocab 151936); returns bytes."""
    dim, ffn, heads, kv, head_dim, vocab = 1024, 3072, 16, 8, 128, 151936
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": dim, "intermediate_size": ffn,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
        "vocab_size": vocab, "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "max_position_embeddings": 4096,
        "dtype": "bfloat16",
    }
    shapes = {"model.embed_tokens.weight": (vocab, dim), "lm_head.weight": (vocab, dim), "model.norm.weight": (dim,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (dim,), p + "post_attention_layernorm.weight": (dim,),
            p + "self_attn.q_proj.weight": (heads * head_dim, dim), p + "self_attn.k_proj.weight": (kv * head_dim, dim),
            p + "self_attn.v_proj.weight": (kv * head_dim, dim), p + "self_attn.o_proj.weight": (dim, heads * head_dim),
            p + "self_attn.q_norm.weight": (head_dim,), p + "self_attn.k_norm.weight": (head_dim,),
            p + "mlp.gate_proj.weight": (ffn, dim), p + "mlp.up_proj.weight": (ffn, dim),
            p + "mlp.down_proj.weight": (dim, ffn),
        })
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map, total = {}, 0
    g = torch.Generator().manual_seed(0)
    for i, names in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.rand(shapes[n], generator=g) * 0.02).to(torch.bfloat16) for n in names}
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


def run_child(loader: str, path: Path, old: Path | None = None) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    extra = [] if old is None else [str(old)]
    out = subprocess.run([sys.executable, "-c", CHILD, loader, str(path), *extra], capture_output=True, text=True,
                         check=True, timeout=600, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--write", default=None, help="only write the checkpoint to this directory")
    parser.add_argument("--old-rev", default=None, help="also load with omnikit at this git revision")
    args = parser.parse_args()
    if args.write:
        print(write_checkpoint(Path(args.write), args.layers))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_load_hf_", dir=args.workdir))
    try:
        writer = [sys.executable, __file__, "--write", str(work / "snapshot"), "--layers", str(args.layers)]
        total = int(subprocess.run(writer, capture_output=True, text=True, check=True, timeout=600).stdout.strip())
        for f in (work / "snapshot").iterdir():  # both loaders then read from the page cache
            f.read_bytes()
        runs: dict[str, list[dict[str, float]]] = {"omnikit": [], "transformers": []}
        old = None
        if args.old_rev:
            from bench_before_after import import_old

            (work / "old").mkdir()
            import_old(args.old_rev, work / "old")
            old, runs = work / "old", {"omnikit old": [], **runs}
        for _ in range(args.repeats):
            for loader in runs:
                runs[loader].append(run_child(loader, work / "snapshot", old if loader == "omnikit old" else None))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for loader, results in runs.items():
        def median(field: str, results: list[dict[str, float]] = results) -> float:
            return statistics.median(r[field] for r in results)

        loaded = results[0]["tensor_bytes"]
        extra_load = statistics.median((r["peak_load_kb"] - r["before_kb"]) * 1024 for r in results)
        extra_touched = statistics.median((r["peak_touched_kb"] - r["before_kb"]) * 1024 for r in results)
        rows.append([loader, f"{median('cold'):.2f}", f"{median('warm'):.2f}", f"{loaded / 2**20:.0f}",
                     f"{extra_load / 2**20:.0f} ({extra_load / loaded:.2f}x)",
                     f"{extra_touched / 2**20:.0f} ({extra_touched / loaded:.2f}x)"])
    where = "" if not args.old_rev else f"; omnikit old: {args.old_rev}"
    print(f"checkpoint: {total / 2**30:.2f} GiB bf16, {args.layers} layers, {args.repeats} runs each (median){where}\n")
    print(format_table(["loader", "first load s", "second load s", "tensors MiB", "extra peak RSS, 2nd load MiB",
                        "extra peak RSS after reading every weight MiB"], rows))


if __name__ == "__main__":
    main()
