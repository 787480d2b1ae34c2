"""Train the registered tiny fusion models on audio-visual relation tasks (place, time, count).

Each task's answer depends on a relation between the video and the audio of one clip (see
``relation_data.py``); chance is 0.5 and either medium alone gives 0.5. Held-out accuracy is
reported with the audio or the video of every sample swapped with another sample's, which must
fall to chance::

    python examples/relation_tasks.py --tasks place time count --styles early xattn --out outputs/relation

trains with the documented recipe (:class:`Recipe`: AdamW 3e-3, 50 warm-up steps then cosine, batch
64, every row asking what the video shows, what the audio shows and then the relation, one question
token each with a loss at each; cross-attention gates started open), writes ``relation_tasks.jsonl``
(results and curves) and ``relation_tasks.png`` (or ``--figure``), and prints a markdown table.
``--tmrope-ablation`` adds early fusion on ``time`` with the value embeddings off, TMRoPE against plain
1-D positions; ``--no-stepwise`` trains with one question per row (the relation, or one medium's);
``--from-results`` redraws the figure and table from saved results (``benchmarks/relation_sweep.py``
writes the same format).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import omnikit
from omnikit.fusion import parameter_groups
from omnikit.fusion.models import TINY_TOKENS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relation_data import CLIP, TASKS, make_batch, swap_media

NO, YES = 10, 11  # answer token ids of the relation question
PART0 = 12  # answers 12..15 of the perception questions
QUESTION = {task: 20 + i for i, task in enumerate(TASKS)}
ASK_VIDEO, ASK_AUDIO = 30, 31  # "what does the video / the audio show?"
VIDEO_TOKENS = (CLIP.frames // 2) * (CLIP.size // 4) ** 2  # 2-frame tubelets of 4 x 4 patches
AUDIO_TOKENS = 25  # 100 mel frames -> 25 tokens


def early_ids(questions: torch.Tensor) -> torch.Tensor:
    """``[video placeholders][audio placeholders][questions][answer slot]`` for ``questions (n,)`` or ``(n, k)``."""
    media = torch.tensor([TINY_TOKENS.video] * VIDEO_TOKENS + [TINY_TOKENS.audio] * AUDIO_TOKENS)
    return _with_question(media, questions)


def xattn_ids(questions: torch.Tensor) -> torch.Tensor:
    """``[video marker][audio marker][questions][answer slot]``."""
    return _with_question(torch.tensor([TINY_TOKENS.video, TINY_TOKENS.audio]), questions)


def _with_question(media: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
    n = questions.shape[0]
    return torch.cat([media.expand(n, -1), questions.view(n, -1), torch.full((n, 1), NO)], dim=1)


STYLES: dict[str, tuple[str, Callable[[str, int], torch.Tensor]]] = {
    "early": ("omni_early_tiny", early_ids),
    "xattn": ("omni_xattn_tiny", xattn_ids),
}
#: What the models are told about the clips: their frame rate, and (early fusion) that the audio is the
#: video's soundtrack, so TMRoPE puts both on one time axis (without it the audio's ids follow the video's).
CLIP_KWARGS = {"early": {"fps": CLIP.fps, "audio_in_video": True}, "xattn": {"fps": CLIP.fps}}


@dataclass
class Recipe:
    """How a model is trained: AdamW with linear warm-up then cosine decay, answer-only loss."""

    #: the cosine spans this many steps; 600 was enough with seed 0 but not for early fusion on ``place`` with
    #: seed 1 (0.625), which 1500 learns by step 600 (docs/fusion.md)
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    #: share of training rows that ask a perception question (what the video / the audio alone shows)
    perception: float = 0.5
    #: the perception rows get another perception row's audio (see :func:`training_questions`)
    unpaired: bool = True
    #: every row asks "what does the video show?", "what does the audio show?" and then the relation, one
    #: token each, with a loss at each (see :func:`training_questions`); ``perception`` and ``unpaired`` are then
    #: unused. False: one question per row (the relation, or with probability ``perception`` one medium's)
    stepwise: bool = True
    #: early fusion only: replace TMRoPE's (t, h, w) ids by plain 1-D positions 0..T-1 (the ablation)
    plain_positions: bool = False
    #: cross-attention only: start the tanh gates of the fusion layers at this value (None: as built, closed
    #: at 0 as in Flamingo, which protects a pretrained text model; these models train from scratch)
    open_gates: float | None = 1.0
    #: learning-rate multiplier of the fusion parameters (projectors, resampler, gated cross-attention)
    fusion_lr: float = 1.0
    #: stop after this many seconds of training (the schedule still spans ``steps``)
    max_seconds: float | None = None
    model_kwargs: dict = field(default_factory=dict)


def answer_logits(model: torch.nn.Module, style: str, questions: torch.Tensor, batch: dict[str, torch.Tensor]):
    """``questions (n,)`` -> ``(n, 6)`` logits of the answer tokens (no, yes, part 0..3) at the question;
    ``questions (n, k)`` -> ``(n, k, 6)``, at each of the ``k`` questions."""
    n = questions.shape[0]
    logits = model(STYLES[style][1](questions), frames=batch["frames"], audio_features=batch["mels"],
                   audio_lengths=torch.full((n,), CLIP.mel_frames))
    k = questions.shape[1] if questions.dim() == 2 else 1
    answers = logits[:, -1 - k : -1, NO : PART0 + 4]
    return answers if questions.dim() == 2 else answers[:, 0]


def stepwise_prompt(task: str) -> torch.Tensor:
    """``(3,)``: "what does the video show?", "what does the audio show?", then the relation question."""
    return torch.tensor([ASK_VIDEO, ASK_AUDIO, QUESTION[task]])


def stepwise_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(n, 3)`` answer indices into :func:`answer_logits` of the :func:`stepwise_prompt` questions."""
    return torch.stack([2 + batch["video_part"], 2 + batch["audio_part"], batch["label"]], dim=1)


def training_questions(task: str, batch: dict[str, torch.Tensor], perception: float, g: torch.Generator,
                       unpaired: bool = True, stepwise: bool = False):
    """Per row, a question (the relation, or with probability ``perception`` what one medium shows) and
    its answer index into :func:`answer_logits`.

    ``unpaired``: the rows asking a perception question get the audio of another such row (in place), so
    that one medium says nothing about what the other shows; otherwise, answering "what does the video
    show?" with what the audio shows is right whenever the relation holds (half the time).

    ``stepwise``: every row asks the three questions of :func:`stepwise_prompt` (``(n, 3)`` questions and
    targets); the relation's answer is then the equality of what the two earlier positions perceive."""
    n = batch["label"].shape[0]
    if stepwise:
        return stepwise_prompt(task).expand(n, -1), stepwise_targets(batch)
    kind = torch.where(torch.rand(n, generator=g) < perception, 1 + (torch.rand(n, generator=g) < 0.5).long(), 0)
    if unpaired:
        rows = (kind > 0).nonzero()[:, 0]
        for key in ("mels", "audio_part"):
            batch[key][rows] = batch[key][rows.roll(1)]
    questions = torch.tensor([QUESTION[task], ASK_VIDEO, ASK_AUDIO])[kind]
    target = torch.stack([batch["label"], 2 + batch["video_part"], 2 + batch["audio_part"]])[kind, torch.arange(n)]
    return questions, target


@torch.no_grad()
def accuracy(model: torch.nn.Module, style: str, task: str, batch: dict[str, torch.Tensor],
             stepwise: bool = False) -> float:
    """Held-out accuracy on the relation question (no vs yes), asked alone or (``stepwise``) after the two
    perception questions."""
    prompt = stepwise_prompt(task) if stepwise else torch.tensor([QUESTION[task]])
    return _accuracy(model, style, prompt, len(prompt) - 1, batch, batch["label"], slice(0, 2))


@torch.no_grad()
def perception_accuracy(model: torch.nn.Module, style: str, medium: str, batch: dict[str, torch.Tensor],
                        task: str | None = None) -> float:
    """Accuracy on "what does the video (``medium="video"``) / the audio show?" (4 answers), asked alone or,
    given a ``task``, in that task's :func:`stepwise_prompt`."""
    index = 0 if medium == "video" else 1
    prompt = stepwise_prompt(task) if task else torch.tensor([(ASK_VIDEO, ASK_AUDIO)[index]])
    return _accuracy(model, style, prompt, index if task else 0, batch, batch[f"{medium}_part"], slice(2, 6))


def _accuracy(model, style: str, prompt: torch.Tensor, index: int, batch: dict[str, torch.Tensor],
              target: torch.Tensor, answers: slice) -> float:
    """Accuracy of the answer at question ``index`` of ``prompt (k,)`` among ``answers``."""
    was_training = model.training
    model.eval()
    logits = answer_logits(model, style, prompt.expand(target.shape[0], -1), batch)[:, index, answers]
    model.train(was_training)
    return float((logits.argmax(-1) == target).float().mean())


def build(style: str, recipe: Recipe, seed: int) -> torch.nn.Module:
    """The registered model, told about the clips (:data:`CLIP_KWARGS`) and what ``recipe.model_kwargs`` says."""
    torch.manual_seed(seed)
    model = omnikit.create_model(STYLES[style][0], **{**CLIP_KWARGS[style], **recipe.model_kwargs}).train()
    if recipe.plain_positions:
        use_plain_positions(model)
    if recipe.open_gates is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("attn_gate", "ff_gate")):
                    p.fill_(recipe.open_gates)
    return model


def optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; the fusion parameters (the ``adapters`` group) at ``recipe.fusion_lr`` times the rate."""
    fusion = set(parameter_groups(model)["adapters"])
    params = dict(model.named_parameters())
    groups = [{"params": [p for n, p in params.items() if n not in fusion]},
              {"params": [p for n, p in params.items() if n in fusion], "lr": recipe.lr * recipe.fusion_lr}]
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def use_plain_positions(model: torch.nn.Module) -> None:
    """Make an early-fusion model use 1-D positions ``0..T-1`` on all rotary sections instead of TMRoPE."""
    fuse = model.fuse

    def plain(input_ids: torch.Tensor, **inputs):
        fused = fuse(input_ids, **inputs)
        return dataclasses.replace(fused, positions=torch.arange(input_ids.shape[1]).expand_as(fused.positions))

    model.fuse = plain


def lr_factor(recipe: Recipe, step: int, seconds: float) -> float:
    """Linear warm-up over ``recipe.warmup`` steps, then cosine decay to 0 at ``recipe.steps`` or at
    ``recipe.max_seconds`` of training, whichever comes first."""
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    if recipe.max_seconds is not None:
        progress = max(progress, seconds / recipe.max_seconds)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(style: str, task: str, recipe: Recipe, *, seed: int = 0, test_size: int = 512, every: int = 50,
          log: Callable[[str], None] | None = None) -> dict:
    """Train one model on one task; returns accuracy curves, final held-out and swap accuracies."""
    model = build(style, recipe, seed)
    test = make_batch(task, test_size, torch.Generator().manual_seed(10_000 + seed))
    opt = optimizer(model, recipe)
    base_lrs = [group["lr"] for group in opt.param_groups]
    g = torch.Generator().manual_seed(seed + 1)
    history: dict[str, list] = {"step": [], "seconds": [], "loss": [], "accuracy": []}
    started = time.perf_counter()
    for step in range(recipe.steps):
        factor = lr_factor(recipe, step, time.perf_counter() - started)
        for group, lr in zip(opt.param_groups, base_lrs):
            group["lr"] = lr * factor
        batch = make_batch(task, recipe.batch_size, g)
        questions, target = training_questions(task, batch, recipe.perception, g, recipe.unpaired, recipe.stepwise)
        logits = answer_logits(model, style, questions, batch)
        loss = torch.nn.functional.cross_entropy(logits.reshape(target.numel(), -1), target.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        out_of_time = recipe.max_seconds is not None and time.perf_counter() - started > recipe.max_seconds
        if (step + 1) % every == 0 or step == recipe.steps - 1 or out_of_time:
            history["step"].append(step + 1)
            history["seconds"].append(round(time.perf_counter() - started, 1))
            history["loss"].append(loss.item())
            history["accuracy"].append(accuracy(model, style, task, test, recipe.stepwise))
            if log:
                log(f"{style} {task} step {step + 1} loss {float(loss):.3f} acc {history['accuracy'][-1]:.3f}")
        if out_of_time:
            break
    reached = [i for i, a in enumerate(history["accuracy"]) if a >= 0.95]
    return {
        "history": history, "seconds": time.perf_counter() - started, "steps": history["step"][-1],
        "accuracy": accuracy(model, style, task, test, recipe.stepwise),
        "audio_swapped": accuracy(model, style, task, swap_media(test, "audio"), recipe.stepwise),
        "video_swapped": accuracy(model, style, task, swap_media(test, "video"), recipe.stepwise),
        "video_perception": perception_accuracy(model, style, "video", test, task if recipe.stepwise else None),
        "audio_perception": perception_accuracy(model, style, "audio", test, task if recipe.stepwise else None),
        "steps_to_0.95": history["step"][reached[0]] if reached else None,
        "seconds_to_0.95": history["seconds"][reached[0]] if reached else None,
    }


def plot(results: list[dict], path: Path, *, x: str = "step") -> None:
    """Held-out accuracy against ``x`` (``"step"`` or ``"seconds"``), one panel per ``result["panel"]`` (default:
    the task), one line per ``result["name"]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if "history" in r]
    panels = list(dict.fromkeys(r.get("panel", r["task"]) for r in sorted(done, key=lambda r: TASKS.index(r["task"]))))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for r in (r for r in done if r.get("panel", r["task"]) == panel):
            ax.plot(r["history"][x], r["history"]["accuracy"], label=r["name"], linewidth=1.3)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
        ax.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
        ax.set(title=panel, xlabel=x, ylabel="held-out accuracy", ylim=(0.4, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: list[dict]) -> str:
    """A markdown table of ``results`` (one row per run)."""
    lines = ["| run | task | steps | s/step | steps to 0.95 | s to 0.95 | accuracy | audio swapped | video swapped "
             "| perception video / audio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['task']} | error: {r['error'][:80]} | | | | | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['task']} | {r['steps']} | {r['seconds'] / r['steps']:.3f} | {r['steps_to_0.95']} "
            f"| {r['seconds_to_0.95']} | {r['accuracy']:.3f} | {r['audio_swapped']:.3f} | {r['video_swapped']:.3f} "
            f"| {r['video_perception']:.2f} / {r['audio_perception']:.2f} |"
        )
    return "\n".join(lines) + "\n"


#: The TMRoPE ablation: early fusion on ``time`` with the media value embeddings off, so that the only
#: time information of a video token is its rotary position id (TMRoPE's t, or a plain 1-D index).
ABLATION_PANEL = "time, no value positions"


def runs(args: argparse.Namespace) -> list[tuple[str, str, str, Recipe, str]]:
    """``(name, style, task, recipe, panel)`` of every run the command line asks for."""
    recipe = Recipe(steps=args.steps, lr=args.lr, perception=args.perception, unpaired=not args.paired,
                    stepwise=args.stepwise, max_seconds=args.max_seconds)
    todo = [(style, style, task, recipe, task) for task in args.tasks for style in args.styles]
    if args.tmrope_ablation:
        no_values = dataclasses.replace(recipe, model_kwargs={"media_positions": False})
        todo += [("early TMRoPE", "early", "time", no_values, ABLATION_PANEL),
                 ("early plain 1-D", "early", "time", dataclasses.replace(no_values, plain_positions=True),
                  ABLATION_PANEL)]
    return todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--max-seconds", type=float, default=None, help="wall-clock cap of each run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--perception", type=float, default=Recipe.perception,
                        help="share of training rows asking a perception question (0: relation question only)")
    parser.add_argument("--stepwise", action=argparse.BooleanOptionalAction, default=Recipe.stepwise,
                        help="ask the video, the audio, then the relation question in every row (default); "
                             "--no-stepwise: one question per row, --perception and --paired apply")
    parser.add_argument("--paired", action="store_true",
                        help="perception rows keep their own audio (the shortcut the recipe removes)")
    parser.add_argument("--tmrope-ablation", action="store_true",
                        help="also train early fusion on `time` with the value embeddings off, TMRoPE and plain 1-D")
    parser.add_argument("--from-results", type=Path, default=None,
                        help="draw the figure and table from a results.jsonl (benchmarks/relation_sweep.py) instead")
    parser.add_argument("--every", type=int, default=25, help="evaluate every this many steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/relation"))
    parser.add_argument("--figure", type=Path, default=None, help="the figure's path (default: OUT/relation_tasks.png)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        results = [json.loads(line) for line in args.from_results.read_text().splitlines() if line.strip()]
    else:
        results = [{"name": name, "style": style, "task": task, "panel": panel,
                    **train(style, task, recipe, seed=args.seed, every=args.every, log=print)}
                   for name, style, task, recipe, panel in runs(args)]
        with (args.out / "relation_tasks.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    plot(results, args.figure or args.out / "relation_tasks.png")
    print(table(results))


if __name__ == "__main__":
    main()
