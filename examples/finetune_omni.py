"""Fine-tune a published-layout omni Thinker end to end, offline: files on disk -> LoRA on every tower ->
stop and resume -> back to the Hugging Face layout.

1. writes a tiny random Qwen2.5-Omni Thinker snapshot in the Hub layout (``save_hf`` of
   ``qwen2_5_omni_thinker_tiny``; a real run points ``load_hf`` at a downloaded snapshot instead),
   a WAV, an MP4 with a soundtrack, a PNG and a JSONL manifest of chats that use them;
2. loads it with ``load_hf``, batches the chats with ``OmniProcessor`` (labels on the assistant's
   turns), puts LoRA on the audio and vision towers, the projectors and the Thinker
   (``lora_targets``) and trains with AdamW and a warm-up/cosine schedule, with a progress bar;
3. stops at ``--stop``, saves a resumable checkpoint (``save_distributed`` with the optimizer,
   scheduler, step, data position and RNG states), rebuilds everything from the snapshot, resumes
   and trains to ``--steps``; checks that the adapters equal those of an uninterrupted run bit for bit;
4. merges the adapters and writes the result with ``save_hf`` (transformers' ``from_pretrained``
   and ``load_hf`` read it back with the adapted logits), and plots the loss curve::

    python examples/finetune_omni.py --steps 12 --stop 5 --out outputs/finetune_omni
"""

from __future__ import annotations

import argparse
import json
import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import omnikit
from omnikit.convert import load_hf, save_hf
from omnikit.data import MediaDataset, OmniProcessor
from omnikit.distributed import load_distributed, read_extra, rng_state, save_distributed, set_rng_state
from omnikit.fusion.towers import lora_parameter_counts, lora_targets

TOWERS = ("audio", "vision", "projector", "thinker")
BATCH = 2


def tokenize(text: str) -> list[int]:
    """A stand-in for the model's tokenizer: characters as ids 8..103 (the tiny vocabulary has 128 ids,
    placeholders and media markers at 120..126); a real run passes the snapshot's tokenizer."""
    return [ord(c) % 96 + 8 for c in text]


def write_files(root: Path) -> Path:
    """The snapshot, media files and ``train.jsonl``; returns the snapshot folder."""
    from PIL import Image

    from omnikit.video.synthetic import write_synthetic_video

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    snapshot = save_hf(omnikit.create_model("qwen2_5_omni_thinker_tiny"), root / "snapshot")
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(12000) / 16000) + 0.05 * rng.standard_normal(12000)
    with wave.open(str(root / "tone.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((tone * 32767).astype(np.int16).tobytes())
    write_synthetic_video(root / "clip.mp4", num_frames=16, fps=8, size=(32, 32), cuts=(8,))
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "noise.png")

    def chat(question: str, answer: str, **media) -> dict:
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                **media}

    lines = [chat("<audio> what do you hear?", "a tone", audios=["tone.wav"]),
             chat("<video> what happens?", "a cut", videos=["clip.mp4"], use_audio_in_video=True),
             chat("<image> describe it.", "noise", images=["noise.png"]),
             chat("<image> and <audio>: which is louder?", "the tone", images=["noise.png"], audios=["tone.wav"])]
    (root / "train.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return snapshot


def build(snapshot: Path, steps: int):
    """The Thinker with LoRA, its optimizer and scheduler, as a fresh run (or a resumed one) builds them."""
    import peft

    torch.manual_seed(1)
    thinker = load_hf(snapshot)
    targets = lora_targets(thinker, TOWERS, ("attention", "mlp"))
    counts = lora_parameter_counts(thinker, targets, r=4)
    model = peft.get_peft_model(thinker, peft.LoraConfig(r=4, lora_alpha=8, **targets))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    warmup = 2
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), counts


def train(root: Path, snapshot: Path, steps: range, total: int, *, save_at: int | None = None,
          resume: bool = False, desc: str = "train") -> tuple[object, list[float], list[str]]:
    """Train ``steps`` (resuming from ``root / "ckpt"`` when ``resume``); returns the model, the losses
    and the adapters whose gradient stayed zero at every step."""
    model, optimizer, scheduler, _ = build(snapshot, total)
    thinker = model.base_model.model
    processor = OmniProcessor(thinker, tokenize, num_frames=2, size=(16, 16), padding_side="right")
    dataset = MediaDataset(root / "train.jsonl", processor)
    order = torch.Generator().manual_seed(2)  # the data position: which samples each step draws
    torch.manual_seed(3)
    if resume:
        load_distributed(model, root / "ckpt", optimizer=optimizer, scheduler=scheduler)
        extra = read_extra(root / "ckpt")
        order.set_state(extra["data_order"])
        set_rng_state(extra["rng"])
    losses, moved = [], set()
    for step in tqdm(steps, desc=desc, dynamic_ncols=True):
        indices = torch.randperm(len(dataset), generator=order)[:BATCH].tolist()
        batch = dataset.collate([dataset[i] for i in indices])
        logits = model(**batch.model_inputs())
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        moved |= {n for n, p in model.named_parameters() if "lora_" in n and p.grad is not None and p.grad.any()}
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step + 1 == save_at:
            save_distributed(model, root / "ckpt", optimizer=optimizer, scheduler=scheduler,
                             extra={"step": step + 1, "data_order": order.get_state(), "rng": rng_state()})
    return model, losses, sorted({n for n, _ in model.named_parameters() if "lora_" in n} - moved)


def adapters(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def export(model, root: Path, snapshot: Path) -> dict[str, float]:
    """Merge the adapters, save_hf, read back with load_hf (and transformers when installed): logit errors."""
    thinker = model.base_model.model
    batch = OmniProcessor(thinker, tokenize, num_frames=2, size=(16, 16))(
        [{"text": "<image> <audio> after training", "images": [root / "noise.png"], "audios": [root / "tone.wav"]}])
    model.eval()
    with torch.no_grad():
        adapted = model(**batch.model_inputs())
        merged = model.merge_and_unload()
    out = save_hf(merged, root / "export")
    rel = lambda a, b: float((a - b).norm() / b.norm())
    with torch.no_grad():
        errors = {"load_hf": rel(load_hf(out).eval()(**batch.model_inputs()), adapted)}
        try:
            from transformers import Qwen2_5OmniThinkerForConditionalGeneration
        except ImportError:
            return errors
        hub = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(out).eval()
        errors["transformers"] = rel(hub(**batch.inputs).logits, adapted)
    return errors


def plot(losses: list[float], resumed: list[float], stop: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses, label="uninterrupted")
    ax.plot(range(1, stop + 1), resumed[:stop], "o", ms=3, label="first run")
    ax.plot(range(stop + 1, len(resumed) + 1), resumed[stop:], "x", label="resumed")
    ax.set(xlabel="step", ylabel="loss (assistant tokens)", title="LoRA fine-tune of a Qwen2.5-Omni Thinker")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stop", type=int, default=5, help="the step the first run stops at")
    parser.add_argument("--out", type=Path, default=Path("outputs/finetune_omni"))
    args = parser.parse_args(argv)
    if not 0 < args.stop < args.steps:
        parser.error(f"--stop expected a step in (0, {args.steps}) but got {args.stop}")
    snapshot = write_files(args.out)
    counts = build(snapshot, args.steps)[3]
    whole, losses, still = train(args.out, snapshot, range(args.steps), args.steps, desc="uninterrupted")
    print(f"LoRA parameters per tower: {counts} (peft trainable: {whole.get_nb_trainable_parameters()[0]}); "
          f"adapters that never got a gradient: {still}")
    _, first, _ = train(args.out, snapshot, range(args.stop), args.steps, save_at=args.stop, desc="first run")
    resumed, rest, _ = train(args.out, snapshot, range(args.stop, args.steps), args.steps, resume=True,
                             desc="resumed")
    want, got = adapters(whole), adapters(resumed)
    equal = sorted(want) == sorted(got) and all(torch.equal(want[k], got[k]) for k in want)
    print(f"resumed at step {args.stop} == uninterrupted to step {args.steps}: {equal}")
    errors = export(resumed, args.out, snapshot)
    print("exported logits, relative error to the adapted model:", errors)
    plot(losses, first + rest, args.stop, args.out / "loss.png")
    summary = {"losses": losses, "resumed_losses": first + rest, "resume_equal": equal, "export_errors": errors,
               "lora_counts": counts, "trainable": whole.get_nb_trainable_parameters()[0], "no_gradient": still}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
