"""Search over training recipes for the relation tasks of ``examples/relation_tasks.py``, in parallel.

Every named configuration (fusion style x task x recipe) trains in its own process with
``--threads`` torch threads and a wall-clock cap of ``--minutes`` (the learning rate's cosine ends at
the cap or at the configuration's step count, whichever comes first); ``--jobs`` processes run at a
time. Written into ``--out`` (flat, three files): ``results.jsonl`` (one line per configuration, as it
finishes: final held-out accuracy, accuracy with the audio / the video swapped between samples, steps
and seconds to 0.95, the accuracy curve), ``summary.md`` (a markdown table, also printed) and
``curves.png`` (held-out accuracy against seconds, one panel per task)::

    python benchmarks/relation_sweep.py --out outputs/sweep --jobs 14 --threads 1 --minutes 6.5 search
    python benchmarks/relation_sweep.py --out outputs/sweep --jobs 7 --threads 2 --minutes 3.2 search
    python benchmarks/relation_sweep.py --list

(the first: the 14 configurations of the ``search`` set at once on 14 cores in about 7 minutes; the
second: the same in two waves of 7 with two threads each).

Positional arguments are configuration names or set names (``--list`` shows both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from relation_data import TASKS  # noqa: E402
from relation_tasks import ABLATION_PANEL, Recipe, plot, table  # noqa: E402

#: Upper bound of steps: the wall-clock cap normally ends a run first.
STEPS = 20_000
NO_RESAMPLER = {"num_latents": None}
RESAMPLER = {"num_latents": 4}


def _configs() -> dict[str, tuple[str, str, Recipe]]:
    """``{name: (style, task, recipe)}``: ``*-stepwise*`` with the documented recipe (:class:`Recipe`'s defaults),
    the others with one question per row (``stepwise=False``, the earlier recipe) and its ablations."""
    base = Recipe(steps=STEPS, open_gates=None, stepwise=False)
    xattn = dataclasses.replace(base, open_gates=1.0)
    configs: dict[str, tuple[str, str, Recipe]] = {}
    for task in TASKS:
        configs[f"early-{task}-stepwise"] = ("early", task, Recipe(steps=STEPS))
        configs[f"xattn-{task}-stepwise"] = ("xattn", task, Recipe(steps=STEPS))
        configs[f"early-{task}-stepwise-bidir"] = ("early", task, Recipe(
            steps=STEPS, model_kwargs={"bidirectional_media": True}))
        configs[f"early-{task}-stepwise-depth4"] = ("early", task, Recipe(steps=STEPS, model_kwargs={"depth": 4}))
        configs[f"early-{task}"] = ("early", task, base)
        configs[f"early-{task}-bidir"] = ("early", task, dataclasses.replace(
            base, model_kwargs={"bidirectional_media": True}))
        configs[f"early-{task}-lr1e-3"] = ("early", task, dataclasses.replace(base, lr=1e-3))
        configs[f"xattn-{task}"] = ("xattn", task, dataclasses.replace(base, model_kwargs=RESAMPLER))
        configs[f"xattn-{task}-open"] = ("xattn", task, dataclasses.replace(xattn, model_kwargs=RESAMPLER))
        configs[f"xattn-{task}-open-noresampler"] = ("xattn", task, dataclasses.replace(
            xattn, model_kwargs=NO_RESAMPLER))
        configs[f"xattn-{task}-noresampler"] = ("xattn", task, dataclasses.replace(base, model_kwargs=NO_RESAMPLER))
        configs[f"xattn-{task}-open-noresampler-paired"] = ("xattn", task, dataclasses.replace(
            xattn, unpaired=False, model_kwargs=NO_RESAMPLER))
        configs[f"early-{task}-paired"] = ("early", task, dataclasses.replace(base, unpaired=False))
        configs[f"xattn-{task}-open-noresampler-every1"] = ("xattn", task, dataclasses.replace(
            xattn, model_kwargs={**NO_RESAMPLER, "every": 1}))
        configs[f"xattn-{task}-open-noresampler-perc75"] = ("xattn", task, dataclasses.replace(
            xattn, perception=0.75, model_kwargs=NO_RESAMPLER))
        configs[f"xattn-{task}-open-noresampler-lr1e-3"] = ("xattn", task, dataclasses.replace(
            xattn, lr=1e-3, model_kwargs=NO_RESAMPLER))
        configs[f"xattn-{task}-open-noresampler-fusionlr3"] = ("xattn", task, dataclasses.replace(
            xattn, fusion_lr=3.0, model_kwargs=NO_RESAMPLER))
        configs[f"xattn-{task}-open-noresampler-media64"] = ("xattn", task, dataclasses.replace(
            xattn, model_kwargs={**NO_RESAMPLER, "media_dim": 64}))
        configs[f"xattn-{task}-open-latents16-every1"] = ("xattn", task, dataclasses.replace(
            xattn, model_kwargs={"num_latents": 16, "every": 1}))
    # TMRoPE against plain 1-D positions with the value embeddings off: time only in the rotary ids
    no_value_positions = dataclasses.replace(base, model_kwargs={"media_positions": False})
    configs["early-time-novalpos-tmrope"] = ("early", "time", no_value_positions)
    configs["early-time-novalpos-plain"] = ("early", "time", dataclasses.replace(
        no_value_positions, plain_positions=True))
    configs["early-time-plain"] = ("early", "time", dataclasses.replace(base, plain_positions=True))
    stepwise_no_values = Recipe(steps=STEPS, model_kwargs={"media_positions": False})
    configs["early-time-stepwise-novalpos-tmrope"] = ("early", "time", stepwise_no_values)
    configs["early-time-stepwise-novalpos-plain"] = ("early", "time", dataclasses.replace(
        stepwise_no_values, plain_positions=True))
    return configs


CONFIGS = _configs()
#: runs drawn in their own panel
PANELS = {name: ABLATION_PANEL for name in (
    "early-time-novalpos-tmrope", "early-time-novalpos-plain", "early-time-stepwise-novalpos-tmrope",
    "early-time-stepwise-novalpos-plain")}

SETS = {
    # 14 runs, all at once with --jobs 14 --threads 1, or two waves of 7 with --jobs 7 --threads 2:
    # the candidate recipe on every style x task, and ablations of its parts on the slowest task (place)
    "search": [
        "early-place", "early-time", "early-count", "xattn-place-open-noresampler", "xattn-time-open-noresampler",
        "xattn-count-open-noresampler", "xattn-place-noresampler", "xattn-place-open",
        "xattn-place-open-noresampler-paired", "xattn-place-open-noresampler-every1",
        "xattn-place-open-noresampler-lr1e-3", "early-place-paired", "early-time-novalpos-tmrope",
        "early-time-novalpos-plain",
    ],
    # every task x style with the one-question-per-row recipe, plus the TMRoPE ablation (8 runs)
    "single": [
        "early-place", "early-time", "early-count", "xattn-place-open-noresampler", "xattn-time-open-noresampler",
        "xattn-count-open-noresampler", "early-time-novalpos-tmrope", "early-time-novalpos-plain",
    ],
    # every task x style with the documented (stepwise) recipe, plus its TMRoPE ablation (8 runs)
    "final": [f"{style}-{task}-stepwise" for task in TASKS for style in ("early", "xattn")]
    + ["early-time-stepwise-novalpos-tmrope", "early-time-stepwise-novalpos-plain"],
}


def run_one(job: tuple[str, float, int, int]) -> dict:
    """Train configuration ``name`` with ``threads`` threads for at most ``minutes`` (a worker process)."""
    import torch
    from relation_tasks import train

    name, minutes, threads, every = job
    torch.set_num_threads(threads)
    style, task, recipe = CONFIGS[name]
    recipe = dataclasses.replace(recipe, max_seconds=minutes * 60)
    started = time.perf_counter()
    try:
        result = train(style, task, recipe, every=every)
    except Exception as error:  # one failed configuration must not lose the others' results
        return {"name": name, "style": style, "task": task, "error": repr(error)}
    panel = PANELS.get(name, task)
    return {"name": name, "style": style, "task": task, "panel": panel, "recipe": _recipe_dict(recipe),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "seconds_per_step": round(result["seconds"] / result["steps"], 4), **result}


def _recipe_dict(recipe: Recipe) -> dict:
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("steps", "max_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=["search"], help="configuration or set names")
    parser.add_argument("--out", type=Path, default=Path("outputs/relation_sweep"))
    parser.add_argument("--jobs", type=int, default=1, help="processes at a time")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock cap of each configuration")
    parser.add_argument("--every", type=int, default=50, help="evaluate every this many steps")
    parser.add_argument("--list", action="store_true", help="print the sets and configurations and exit")
    args = parser.parse_args()
    if args.list:
        for name, members in SETS.items():
            print(f"set {name}: {' '.join(members)}")
        print("configurations:", " ".join(CONFIGS))
        return
    names = [n for c in args.configs for n in SETS.get(c, [c])]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; see --list")
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "results.jsonl"
    jsonl.write_text("")
    results: list[dict] = []
    jobs = [(n, args.minutes, args.threads, args.every) for n in names]
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            with jsonl.open("a") as f:
                f.write(json.dumps(result) + "\n")
            status = result.get("error") or f"accuracy {result['accuracy']:.3f} after {result['steps']} steps"
            print(f"{result['name']}: {status}", flush=True)
    results.sort(key=lambda r: r["name"])
    summary = table(results)
    (args.out / "summary.md").write_text(summary)
    plot(results, args.out / "curves.png", x="seconds")
    print(summary)


if __name__ == "__main__":
    main()
