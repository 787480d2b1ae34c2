"""A tiny Thinker-Talker learns to answer a generated audio question with text and with the codec
codes of a generated spoken answer; then the Thinker alone is fine-tuned on a new (video) task,
without and with :class:`omnikit.fusion.joint.TalkerAlignment`, and the Talker is measured again.

Run: ``python examples/train_tiny_speech.py [--strategy delay|depth|mtp] [--threads 2]`` (a few
minutes on 2 CPU threads). Prints a markdown table: held-out Talker code accuracy (teacher forced),
the log-mel L1 distance between the waveform decoded from the predicted codes and from the target
codes, and the Thinker's reply accuracy on both tasks.

Task A (speech): a 0.3 s tone of one of 4 pitches asks "which?"; the reply is a word ("low" or
"high", shared by two pitches) and 0.16 s (8 code frames) of a chord proper to the pitch, tokenized
by the frozen tiny codec. Which chord of the two sharing a word is only in the Thinker's hidden
states (of the audio question), not in the reply tokens; once the first frame is out, teacher
forcing lets the Talker continue from the previous codes, so the first-frame accuracy is the
sensitive number.
Task B (Thinker-only fine-tune): a 4-frame video of one of 4 colours asks "colour?"; text reply only.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import omnikit
from omnikit.audio.features import LogMelSpectrogram
from omnikit.data import OmniProcessor
from omnikit.fusion import text_lm_loss
from omnikit.fusion.joint import TalkerAlignment, thinker_states, thinker_talker_loss
from omnikit.fusion.towers import train_towers

RATE = 16000
PITCHES = (300.0, 600.0, 1200.0, 2400.0)
SPOKEN = ("low", "low", "high", "high")  # two pitches share a word: the voice must come from the Thinker's state
CHORDS = ((220.0, 330.0), (440.0, 550.0), (880.0, 1320.0), (1760.0, 2640.0))
COLOURS = ((1.0, 0.1, 0.1), (0.1, 1.0, 0.1), (0.1, 0.1, 1.0), (1.0, 1.0, 0.1))
WRITTEN = ("rose", "lime", "navy", "gold")


def tone(freqs: tuple[float, ...], seconds: float, g: torch.Generator) -> torch.Tensor:
    """A chord with random phases and level plus a little noise: ``(S,)``."""
    t = torch.arange(int(seconds * RATE)) / RATE
    wav = sum(torch.sin(2 * torch.pi * f * t + 6.28 * torch.rand((), generator=g)) for f in freqs)
    level = 0.2 + 0.1 * torch.rand((), generator=g)
    return level * wav / len(freqs) + 0.01 * torch.randn(t.shape, generator=g)


def speech_set(model, processor, n: int, seed: int) -> dict:
    """Task A: prompts, replies and the codes of the spoken replies."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    samples = [{"messages": [{"role": "user", "content": "<audio> which?"},
                             {"role": "assistant", "content": SPOKEN[c]}],
                "audios": [tone((PITCHES[c],), 0.3, g)]} for c in labels.tolist()]
    batch = processor(samples)
    speech = torch.stack([tone(CHORDS[c], 0.16, g) for c in labels.tolist()])[:, None]
    with torch.no_grad():
        codes = model.codec.encode(speech)
    reply_start = int(batch.loss_mask[0].nonzero()[0])
    return {"batch": batch, "codes": codes, "reply_start": reply_start}


def video_set(processor, n: int, seed: int) -> dict:
    """Task B: colour videos and written replies (no speech)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    samples = []
    for c in labels.tolist():
        frames = torch.tensor(COLOURS[c])[None, :, None, None] * (0.7 + 0.3 * torch.rand(4, 1, 16, 16, generator=g))
        samples.append({"messages": [{"role": "user", "content": "<video> colour?"},
                                     {"role": "assistant", "content": WRITTEN[c]}], "videos": [frames]})
    return {"batch": processor(samples)}


def rows(data: dict, index: torch.Tensor) -> dict:
    """A sub-batch of a data set (media items: one per sample, in order)."""
    b = data["batch"]
    media = {}
    if b.frames is not None:
        media["frames"] = b.frames[index]
    if b.audio_features is not None:
        media["audio_features"], media["audio_lengths"] = b.audio_features[index], b.audio_lengths[index]
    out = {"input_ids": b.input_ids[index], "lengths": b.lengths[index], "loss_mask": b.loss_mask[index], **media}
    if "codes" in data:
        out["codes"], out["reply_start"] = data["codes"][index], data["reply_start"]
    return out


def text_accuracy(model, data: dict) -> float:
    b = rows(data, torch.arange(len(data["batch"].input_ids)))
    with torch.no_grad():
        logits, _ = thinker_states(model.omni, b["input_ids"], lengths=b["lengths"],
                                   **{k: v for k, v in b.items() if k in ("frames", "audio_features", "audio_lengths")})
    target, mask = b["input_ids"][:, 1:], b["loss_mask"][:, 1:]
    return float(((logits[:, :-1].argmax(-1) == target) & mask).sum() / mask.sum())


def speech_metrics(model, data: dict, mel: LogMelSpectrogram) -> tuple[float, float, float]:
    """Held-out teacher-forced code accuracy (all frames, first frame) and log-mel L1 of decoded
    predicted vs target codes."""
    b = rows(data, torch.arange(len(data["codes"])))
    media = {k: b[k] for k in ("audio_features", "audio_lengths")}
    with torch.no_grad():
        logits = model(b["input_ids"], b["codes"], reply_start=b["reply_start"], **media)
        predicted = logits[..., : model.talker.config.codebook_size].argmax(-1).transpose(1, 2)
        correct = (predicted == b["codes"]).float()
        spec = [mel(model.codec.decode(c)[:, 0])[0] for c in (predicted, b["codes"])]
    return float(correct.mean()), float(correct[:, :, 0].mean()), float((spec[0] - spec[1]).abs().mean())


def train(model, steps: int, lr: float, step_loss) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for step in range(steps):
        opt.zero_grad()
        step_loss(step).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="delay", choices=("delay", "depth", "mtp"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256, help="training samples per task (held-out: a quarter)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = omnikit.create_model("thinker_talker_tiny", strategy=args.strategy)
    processor = OmniProcessor(model)
    n = args.samples
    train_a, held_a = speech_set(model, processor, n, 1), speech_set(model, processor, n // 4, 2)
    train_b, held_b = video_set(processor, n, 3), video_set(processor, n // 4, 4)
    mel = LogMelSpectrogram(80)
    g = torch.Generator().manual_seed(5)

    def pick(data: dict) -> dict:
        return rows(data, torch.randint(0, len(data["batch"].input_ids), (args.batch,), generator=g))

    def joint_step(_: int) -> torch.Tensor:
        b = pick(train_a)
        return thinker_talker_loss(model, b.pop("input_ids"), b.pop("codes"), **b).total

    train(model, args.pretrain_steps, 3e-3, joint_step)  # the codec stays frozen (ThinkerTalker freezes it)
    report = {"before fine-tune": (model, None)}
    pretrained = copy.deepcopy(model.state_dict())

    for name, mode in (("Thinker-only fine-tune", None), ("+ TalkerAlignment('follow')", "follow"),
                       ("+ TalkerAlignment('anchor')", "anchor")):
        tuned = omnikit.create_model("thinker_talker_tiny", strategy=args.strategy)
        tuned.load_state_dict(pretrained)
        train_towers(tuned, ["thinker", "talker"] if mode == "follow" else ["thinker"])
        align = TalkerAlignment(tuned, mode, weight=1.0 if mode == "follow" else 10.0) if mode else None

        def finetune_step(_: int, tuned=tuned, align=align) -> torch.Tensor:
            b = pick(train_b)
            logits = tuned.omni(b["input_ids"], lengths=b["lengths"], frames=b["frames"])
            loss = text_lm_loss(logits, b["input_ids"], media_tokens=tuned.omni.thinker.media_tokens,
                                loss_mask=b["loss_mask"])
            if align is not None:
                r = pick(train_a)
                loss = loss + align.loss(r.pop("input_ids"), r.pop("codes"), reply_start=r.pop("reply_start"),
                                         lengths=r["lengths"], audio_features=r["audio_features"],
                                         audio_lengths=r["audio_lengths"])
            return loss

        train(tuned, args.finetune_steps, 3e-3, finetune_step)
        report[name] = (tuned, mode)

    print(f"strategy={args.strategy}, {args.pretrain_steps} joint steps, {args.finetune_steps} fine-tune steps, "
          f"batch {args.batch}, {args.threads} threads, {time.perf_counter() - started:.0f} s\n")
    print("| model | Talker code acc. (held-out A) | first-frame code acc. | mel L1 (decoded) | Thinker reply acc. A "
          "| Thinker reply acc. B |")
    print("|---|---|---|---|---|---|")
    for name, (m, _) in report.items():
        m.eval()
        acc, first, dist = speech_metrics(m, held_a, mel)
        text_a, text_b = text_accuracy(m, held_a), text_accuracy(m, held_b)
        print(f"| {name} | {100 * acc:.1f}% | {100 * first:.1f}% | {dist:.3f} | {100 * text_a:.1f}% | "
              f"{100 * text_b:.1f}% |")


if __name__ == "__main__":
    main()
