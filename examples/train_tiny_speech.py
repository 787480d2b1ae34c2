"""A tiny Thinker-Talker learns to answer a generated audio question with text and with the codec
codes of a generated spoken answer; then the Thinker side alone is fine-tuned on a new audio task,
the Talker frozen, without and with :class:`omnikit.fusion.joint.TalkerAlignment`, and the Talker
is measured again.

Run: ``python examples/train_tiny_speech.py [--strategy delay|depth|mtp] [--threads 1]`` (about a
minute of CPU). Prints a markdown table on held-out task-A questions: the Talker's code accuracy
when it generates freely (greedy, from the Thinker's states of the reference reply) and teacher
forced, the log-mel L1 distance between the waveforms decoded from the generated and from the
target codes, and the Thinker's teacher-forced reply accuracy on both tasks.

Task A (speech): a 0.3 s tone of one of 4 pitches asks "which?"; the reply is a word per pitch and
0.16 s (8 code frames) of a chord proper to the pitch, coded by a :class:`FrameCodec`.
Task B (the fine-tune): a 0.3 s noise burst with 1 to 3 gaps asks "count?"; text reply only. The
Thinker, its audio encoder and projector train at a high learning rate (the Talker stays frozen),
as a user adapting the Thinker to new audio would.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import omnikit
from omnikit.audio.features import LogMelSpectrogram
from omnikit.data import OmniProcessor
from omnikit.fusion import text_lm_loss
from omnikit.fusion.joint import TalkerAlignment, thinker_states, thinker_talker_loss
from omnikit.fusion.towers import train_towers
from omnikit.speech import ThinkerTalker
from omnikit.utils.checks import OmnikitValueError

RATE = 16000
PITCHES = (300.0, 600.0, 1200.0, 2400.0)
SPOKEN = ("deep", "bass", "alto", "high")  # one 4-letter word per pitch: replies of equal length
CHORDS = ((220.0, 330.0), (440.0, 550.0), (880.0, 1320.0), (1760.0, 2640.0))
COUNTS = ("one", "two", "three")  # task B: gaps in a noise burst
THINKER_SIDE = ("thinker", "audio", "projector")
MEDIA = ("audio_features", "audio_lengths")
PRETRAIN_LR = 1e-2
FOLLOW_TALKER_LR = 3e-3  # the Talker's learning rate while TalkerAlignment("follow") trains it


def tone(freqs: tuple[float, ...], seconds: float, g: torch.Generator | None = None) -> torch.Tensor:
    """A chord ``(S,)``; with ``g``: random phases and level plus a little noise (a question), without:
    always the same waveform (a spoken answer)."""
    t = torch.arange(int(seconds * RATE)) / RATE
    phase = (lambda: 6.28 * torch.rand((), generator=g)) if g is not None else (lambda: 0.0)
    wav = sum(torch.sin(2 * torch.pi * f * t + phase()) for f in freqs) / len(freqs)
    if g is None:
        return 0.25 * wav
    return (0.2 + 0.1 * torch.rand((), generator=g)) * wav + 0.01 * torch.randn(t.shape, generator=g)


class FrameCodec(nn.Module):
    """A stand-in speech codec that decodes to something: each ``hop``-sample waveform frame is cut in
    ``num_codebooks`` equal parts, part ``k`` coded by the nearest entry of codebook ``k`` (:meth:`fit`).

    The tiny model's own codec (an untrained causal SEANet) cannot serve here: its encoder maps every
    chord to the same codes and its decoder every code to nearly the same waveform.
    ``encode``: ``wav (B, 1, S) -> codes (B, K, S // hop)``; ``decode``: ``codes (B, K, F) -> wav (B, 1, F * hop)``.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, hop: int, sample_rate: int = RATE) -> None:
        super().__init__()
        part = hop // num_codebooks
        self.register_buffer("codebooks", torch.zeros(num_codebooks, codebook_size, part))
        self.hop, self.sample_rate = part * num_codebooks, sample_rate
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size

    @property
    def frame_rate(self) -> float:
        """Code frames per second (the codec interface: ``sample_rate / hop``)."""
        return self.sample_rate / self.hop

    def parts(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S) -> (K, B * F, hop // K)``."""
        whole = wav[:, 0, : wav.shape[-1] // self.hop * self.hop]
        return whole.reshape(-1, self.num_codebooks, self.hop // self.num_codebooks).transpose(0, 1)

    def fit(self, voice: torch.Tensor, others: torch.Tensor, generator: torch.Generator) -> None:
        """Codebook ``k``: the parts ``k`` of ``voice (B, 1, S)`` (so it is coded to 0.01), then random
        parts ``k`` of ``others (B', 1, S')``, skipping any part within L2 distance 0.01 of one kept
        (a periodic voice repeats its parts)."""
        for k, (mine, extra) in enumerate(zip(self.parts(voice), self.parts(others))):
            kept = mine[:1]
            for part in torch.cat((mine, extra[torch.randperm(len(extra), generator=generator)])):
                if len(kept) < self.codebook_size and torch.cdist(part[None], kept).min() > 0.01:
                    kept = torch.cat((kept, part[None]))
            if len(kept) < self.codebook_size:
                raise OmnikitValueError(f"`others` expected at least {self.codebook_size} distinct parts "
                                        f"for codebook {k} but got {len(kept)}")
            self.codebooks[k] = kept

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        codes = [torch.cdist(part, book).argmin(-1) for part, book in zip(self.parts(wav), self.codebooks)]
        return torch.stack(codes).unflatten(1, (wav.shape[0], -1)).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        parts = torch.stack([book[c] for book, c in zip(self.codebooks, codes.unbind(1))], dim=2)  # (B, F, K, p)
        return parts.flatten(1)[:, None]


def speech_model(strategy: str) -> ThinkerTalker:
    """``thinker_talker_tiny`` speaking through a :class:`FrameCodec` of its code layout (50 frames/s)
    whose codebooks hold the spoken answers' pieces and pieces of the same chords at other phases."""
    tiny = omnikit.create_model("thinker_talker_tiny", strategy=strategy)
    codec = FrameCodec(tiny.talker.config.num_codebooks, tiny.talker.config.codebook_size, RATE // 50)
    g = torch.Generator().manual_seed(0)
    others = torch.stack([tone(chord, 0.16, g) for chord in CHORDS for _ in range(4)])[:, None]
    codec.fit(torch.stack([tone(chord, 0.16) for chord in CHORDS])[:, None], others, g)
    return ThinkerTalker(tiny.omni, tiny.talker, codec, frames_per_token=tiny.frames_per_token)


def gapped_noise(gaps: int, seconds: float, g: torch.Generator) -> torch.Tensor:
    """White noise with ``gaps`` silent 30 ms gaps at random places: ``(S,)``."""
    wav = 0.3 * torch.randn(int(seconds * RATE), generator=g)
    width = int(0.03 * RATE)
    slots = torch.randperm(len(wav) // (2 * width) - 1, generator=g)[:gaps] + 1
    for slot in slots.tolist():
        wav[2 * width * slot: 2 * width * slot + width] = 0.0
    return wav


def speech_set(model, processor, n: int, seed: int) -> dict:
    """Task A: prompts, replies and the codes of the spoken replies."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    samples = [{"messages": [{"role": "user", "content": "<audio> which?"},
                             {"role": "assistant", "content": SPOKEN[c]}],
                "audios": [tone((PITCHES[c],), 0.3, g)]} for c in labels.tolist()]
    batch = processor(samples)
    speech = torch.stack([tone(CHORDS[c], 0.16) for c in labels.tolist()])[:, None]
    with torch.no_grad():
        codes = model.codec.encode(speech)
    reply_start = int(batch.loss_mask[0].nonzero()[0])  # every reply has the same length: no padding
    return {"batch": batch, "codes": codes, "reply_start": reply_start}


def count_set(processor, n: int, seed: int) -> dict:
    """Task B: noise bursts with 1 to 3 gaps and written replies (no speech)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COUNTS), (n,), generator=g)
    samples = [{"messages": [{"role": "user", "content": "<audio> count?"},
                             {"role": "assistant", "content": COUNTS[c]}],
                "audios": [gapped_noise(c + 1, 0.3, g)]} for c in labels.tolist()]
    return {"batch": processor(samples)}


def rows(data: dict, index: torch.Tensor) -> dict:
    """A sub-batch of a data set (media items: one per sample, in order)."""
    b = data["batch"]
    out = {"input_ids": b.input_ids[index], "lengths": b.lengths[index], "loss_mask": b.loss_mask[index],
           "audio_features": b.audio_features[index], "audio_lengths": b.audio_lengths[index]}
    if "codes" in data:
        out["codes"], out["reply_start"] = data["codes"][index], data["reply_start"]
    return out


def everything(data: dict) -> dict:
    """The whole data set as one batch."""
    return rows(data, torch.arange(len(data["batch"].input_ids)))


def media_of(b: dict) -> dict:
    return {k: v for k, v in b.items() if k in MEDIA}


def text_accuracy(model, data: dict) -> float:
    """Teacher-forced next-token accuracy over the reply tokens."""
    b = everything(data)
    with torch.no_grad():
        logits, _ = thinker_states(model.omni, b["input_ids"], lengths=b["lengths"],
                                   **media_of(b))
    target, mask = b["input_ids"][:, 1:], b["loss_mask"][:, 1:]
    return float(((logits[:, :-1].argmax(-1) == target) & mask).sum() / mask.sum())


def speech_metrics(model, data: dict, mel: LogMelSpectrogram) -> tuple[float, float, float]:
    """On the Thinker's states of the reference replies: the code accuracy of the Talker generating
    freely (greedy) and teacher forced, and the log-mel L1 between the waveforms decoded from the
    generated and from the target codes."""
    b = everything(data)
    codes = b["codes"]
    batch, _, frames = codes.shape
    with torch.no_grad():
        _, states = thinker_states(model.omni, b["input_ids"], lengths=b["lengths"],
                                   **media_of(b))
        reply = states[:, b["reply_start"]:]
        generated = torch.stack(list(model.talker.stream_codes(
            iter(reply.unbind(1)), batch_size=batch, max_frames=frames, min_frames=frames,
            frames_per_token=model.frames_per_token)), dim=2)
        forced = model.talker(codes, reply.repeat_interleave(model.frames_per_token, dim=1)).argmax(-1)
        spec = [mel(model.codec.decode(c)[:, 0])[0] for c in (generated, codes)]
    free = float((generated == codes).float().mean())
    teacher = float((forced.transpose(1, 2) == codes).float().mean())
    return free, teacher, float((spec[0] - spec[1]).abs().mean())


def train(model: ThinkerTalker, steps: int, lr: float, step_loss, *, talker_lr: float | None = None) -> None:
    """AdamW on the trainable parameters (the Talker's at ``talker_lr`` if given), cosine decay to 0,
    gradients clipped to 1."""
    talker = {id(p) for p in model.talker.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in talker]},
              {"params": [p for p in params if id(p) in talker], "lr": talker_lr or lr}]
    opt = torch.optim.AdamW([group for group in groups if group["params"]], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        step_loss().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()


VARIANTS = {"Thinker-side fine-tune": None, "+ TalkerAlignment('follow')": "follow",
            "+ TalkerAlignment('anchor')": "anchor"}


def run(*, strategy: str = "delay", pretrain_steps: int = 300, finetune_steps: int = 100, finetune_lr: float = 1e-2,
        batch: int = 32, samples: int = 256, modes: tuple[str | None, ...] = (None, "follow", "anchor")
        ) -> dict[str, dict[str, float]]:
    """Joint pre-training on task A, then one Thinker-side fine-tune on task B per alignment mode
    (``None``: none). Returns ``{row: {"generated", "teacher_forced", "mel", "reply_a", "reply_b"}}``
    measured on held-out questions (``samples // 4`` per task)."""
    torch.manual_seed(0)
    model = speech_model(strategy)
    processor = OmniProcessor(model)
    train_a, held_a = speech_set(model, processor, samples, 1), speech_set(model, processor, samples // 4, 2)
    train_b, held_b = count_set(processor, samples, 3), count_set(processor, samples // 4, 4)
    g = torch.Generator().manual_seed(5)

    def pick(data: dict) -> dict:
        return rows(data, torch.randint(0, len(data["batch"].input_ids), (batch,), generator=g))

    def joint_step() -> torch.Tensor:
        b = pick(train_a)
        return thinker_talker_loss(model, b.pop("input_ids"), b.pop("codes"), **b).total

    train(model, pretrain_steps, PRETRAIN_LR, joint_step)  # the codec is not trained (ThinkerTalker freezes it)
    tuned_models = {"before fine-tune": model}
    for name, mode in VARIANTS.items():
        if mode not in modes:
            continue
        tuned = copy.deepcopy(model)
        g.manual_seed(5)  # every variant sees the same task-B batches
        train_towers(tuned, (*THINKER_SIDE, "talker") if mode == "follow" else THINKER_SIDE)
        align = TalkerAlignment(tuned, mode, weight=1.0 if mode == "follow" else 10.0) if mode else None

        def finetune_step(tuned=tuned, align=align) -> torch.Tensor:
            b = pick(train_b)
            logits = tuned.omni(b["input_ids"], lengths=b["lengths"], **media_of(b))
            loss = text_lm_loss(logits, b["input_ids"], media_tokens=tuned.omni.thinker.media_tokens,
                                loss_mask=b["loss_mask"])
            if align is not None:
                r = pick(train_a)
                loss = loss + align.loss(r["input_ids"], r["codes"], reply_start=r["reply_start"],
                                         lengths=r["lengths"], **media_of(r))
            return loss

        train(tuned, finetune_steps, finetune_lr, finetune_step, talker_lr=FOLLOW_TALKER_LR)
        tuned_models[name] = tuned
    mel = LogMelSpectrogram(80)
    results = {}
    for name, m in tuned_models.items():
        m.eval()
        generated, forced, dist = speech_metrics(m, held_a, mel)
        results[name] = {"generated": generated, "teacher_forced": forced, "mel": dist,
                         "reply_a": text_accuracy(m, held_a), "reply_b": text_accuracy(m, held_b)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="delay", choices=("delay", "depth", "mtp"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 threads spin on a busy 2-core CPU)")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--finetune-lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256, help="training samples per task (held-out: a quarter)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = run(strategy=args.strategy, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                  finetune_lr=args.finetune_lr, batch=args.batch, samples=args.samples)
    print(f"strategy={args.strategy}, {args.pretrain_steps} joint steps, {args.finetune_steps} fine-tune steps "
          f"(lr {args.finetune_lr:g}), batch {args.batch}, {args.threads} threads, "
          f"{time.perf_counter() - started:.0f} s\n")
    print("| model | Talker code acc., generated | teacher forced | mel L1, generated vs target "
          "| Thinker reply acc. A | Thinker reply acc. B |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['generated']:.1f}% | {100 * r['teacher_forced']:.1f}% | {r['mel']:.3f} "
              f"| {100 * r['reply_a']:.1f}% | {100 * r['reply_b']:.1f}% |")


if __name__ == "__main__":
    main()
