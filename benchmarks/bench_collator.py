"""Data loading vs the model step: OmniProcessor + MediaDataset from files on disk, in a DataLoader.

    python benchmarks/bench_collator.py [--batches 6] [--workers 2] [--threads 2]

Writes 8 WAVs (1-2 s) and 8 MP4s (2 s, 96x64, with a soundtrack) into a temporary folder and a
JSONL manifest of mixed samples (audio questions, video questions, half of them with
``use_audio_in_video``), then times, in one process (from creating the loader to its last batch,
worker start-up included): the loader alone (0 and ``--workers`` workers,
batches of 16), one training step of ``omni_early_tiny`` on a ready batch (forward, backward,
AdamW), and the training loop fed by the loader with ``--workers`` workers. Data loading is not the
bottleneck when the fed loop's step time is close to the bare step time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from common import format_table

import omnikit
from omnikit.data import MediaDataset, OmniProcessor
from omnikit.fusion import text_lm_loss
from omnikit.fusion.models import TINY_TOKENS
from omnikit.video.synthetic import write_synthetic_video

BATCH = 16


def write_files(root: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        pcm = (rng.uniform(-0.3, 0.3, int(16000 * (1 + i / 8))) * 32767).astype(np.int16)
        with wave.open(str(root / f"a{i}.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes(pcm.tobytes())
        write_synthetic_video(root / f"v{i}.mp4", num_frames=24, fps=12, size=(64, 96), cuts=(12,), seed=i)
        lines.append({"messages": [{"role": "user", "content": "<audio> what was said?"},
                                   {"role": "assistant", "content": f"answer {i}"}], "audios": [f"a{i}.wav"]})
        lines.append({"messages": [{"role": "user", "content": "<video> what happens?"},
                                   {"role": "assistant", "content": f"scene {i}"}], "videos": [f"v{i}.mp4"],
                      "use_audio_in_video": i % 2 == 0})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = omnikit.create_model("omni_early_tiny")
    processor = OmniProcessor(model, num_frames=4, size=(32, 32), max_media_tokens=256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch) -> None:
        logits = model(**batch.model_inputs())
        loss = text_lm_loss(logits, batch.input_ids, media_tokens=TINY_TOKENS, loss_mask=batch.loss_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = write_files(root) * args.batches
        (root / "train.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
        dataset = MediaDataset(root / "train.jsonl", processor)

        def loader(workers: int):
            return torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers,
                                               collate_fn=dataset.collate, timeout=600 if workers else 0)

        def timed(workers: int, train: bool) -> float:
            """Seconds per batch from creating the loader to the last batch (worker start-up included)."""
            start = time.perf_counter()
            count = 0
            for batch in loader(workers):
                if train:
                    step(batch)
                count += 1
            return (time.perf_counter() - start) / count

        ready = next(iter(loader(0)))
        step(ready)
        start = time.perf_counter()
        for _ in range(args.batches):
            step(ready)
        bare = (time.perf_counter() - start) / args.batches
        rows = []
        for name, workers, train in (("loader alone", 0, False), ("loader alone", args.workers, False),
                                     ("train loop fed by the loader", args.workers, True)):
            seconds = timed(workers, train)
            rows.append([name, workers, f"{seconds * 1000:.0f}", f"{BATCH / seconds:.1f}",
                         f"{seconds / bare:.2f}"])
        rows.append(["model step on a ready batch", "-", f"{bare * 1000:.0f}", f"{BATCH / bare:.1f}", "1.00"])
    print(f"batch {BATCH} mixed samples from disk, {args.threads} torch threads, frames {tuple(ready.frames.shape)}, "
          f"audio {tuple(ready.audio_features.shape)}, tokens {tuple(ready.input_ids.shape)}\n")
    print(format_table(["what", "workers", "ms / batch", "samples / s", "x model step"], rows))


if __name__ == "__main__":
    main()
