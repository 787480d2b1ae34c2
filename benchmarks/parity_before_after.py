"""Outputs of tiny models at an earlier git revision and on this checkout, compared in one process.

Usage: python benchmarks/parity_before_after.py --old-rev a662f14 [--hub]

For each model the old revision builds it (seed 0), its state dict is loaded into this checkout's
model (through the legacy key remap where names changed) and both run on the same inputs; a
checkpoint the old revision saves is loaded with this checkout's ``load_pretrained`` too. The
table gives the largest absolute difference of each output (0 means bit-identical). ``--hub`` adds
the published-checkpoint paths (``load_hf`` of every architecture and part, ``from_transformers``
of every class, ``save_hf`` exports; see ``parity_hub.py``; needs transformers).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from bench_before_after import import_old
from common import format_table

import omnikit

Run = Callable[[torch.nn.Module, dict], torch.Tensor]


def _forward(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    return omnikit.testing.contract.primary_output(model(**kwargs))[0]


def _generate(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    ids = kwargs["input_ids"][:, :10]
    media = {k: v for k, v in kwargs.items() if k in ("frames", "audio_features", "audio_lengths")}
    return model.generate(ids, max_new_tokens=4, **media).tokens.float()


def _absent(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    model.run_absent_media = True
    text = kwargs["input_ids"].clamp(min=8)
    return _forward(model, {"input_ids": text, "lengths": kwargs["lengths"]})


def _duplex_stream(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    frames = kwargs["user"].unbind(-1)
    steps = list(model.stream(iter(frames)))
    return torch.cat([torch.cat((s.text[:, None], s.codes), 1) for s in steps], 1).float()


def _talker_stream(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    states = torch.randn(2, 5, model.config.thinker_dim, generator=torch.Generator().manual_seed(3))
    return torch.stack(list(model.stream_codes(iter(states.unbind(1)), batch_size=2, max_frames=4)), 2).float()


def _thinker_generate(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    return model.generate(**kwargs, max_new_tokens=4).tokens.float()


def _thinker_absent(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    model.run_absent_media = True
    ids, placeholders = kwargs["input_ids"], torch.tensor(list(model.text_model.media_tokens.as_dict().values()))
    text = torch.where(torch.isin(ids, placeholders), 8, ids)  # text only
    return _forward(model, {"input_ids": text, "attention_mask": kwargs["attention_mask"]})


def _speech_stream(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    from omnikit_old.fusion.models import tiny_omni_prompt

    ids, media = tiny_omni_prompt(torch.Generator().manual_seed(0))
    chunks = list(model.stream(ids, max_new_tokens=6, max_frames=8, chunk_frames=3, **media))
    return torch.cat([torch.cat((c.codes.flatten().float(), c.wav.flatten(), c.text_tokens.flatten().float()))
                      for c in chunks])


CASES: list[tuple[str, dict, Run]] = [
    *((name, {}, _forward) for name in omnikit.list_models("*") if name.endswith("_tiny")),  # every tiny model
    ("omni_early_tiny", {}, _generate),
    ("omni_early_tiny", {}, _absent),
    ("omni_xattn_tiny", {}, _absent),
    ("thinker_talker_tiny", {}, _speech_stream),
    ("qwen2_5_omni_thinker_tiny", {}, _thinker_generate),
    ("qwen2_5_omni_thinker_tiny", {}, _thinker_absent),
    ("qwen3_omni_thinker_tiny", {}, _thinker_generate),
    ("qwen3_omni_thinker_tiny", {}, _thinker_absent),
    ("duplex_tiny", {}, _duplex_stream),
    ("talker_tiny", {"strategy": "mtp"}, _talker_stream),
    ("talker_tiny", {"strategy": "depth"}, _forward),
    # configs that nest a TransformerConfig: the old checkpoints' flat overrides load through the legacy path
    ("whisper_encoder_tiny", {"depth": 1}, _forward),
    ("qwen2_5_omni_audio_tiny", {"n_window": 2}, _forward),
    ("qwen3_omni_aut_tiny", {"num_heads": 4}, _forward),
    ("mimi_tiny", {"sliding_window": 3}, _forward),
    ("moshi_tiny", {}, _forward),
    ("code2wav_tiny", {"sliding_window": 2}, _forward),
    ("qformer_tiny", {"num_heads": 4}, _forward),
    ("perceiver_resampler_tiny", {"depth": 1}, _forward),
    ("vivit_factorized_tiny", {"spatial_depth": 1}, _forward),
    ("temporal_transformer_tiny", {"mlp_ratio": 2.0}, _forward),
    ("qwen2_5_omni_vision_tiny", {"mlp_hidden": 24}, _forward),
    ("timesformer_tiny", {"depth": 1}, _forward),
    ("qwen3_vit_tiny", {"mlp_hidden": 24}, _forward),
    ("video_vit_tiny", {"mlp_ratio": 2.0}, _forward),
    ("wav2vec2_tiny", {"depth": 1}, _forward),
]


def compare(old: ModuleType, name: str, overrides: dict, run: Run, directory: Path) -> tuple[float, float]:
    """Largest |old - new| with the state dict loaded directly, and through an old checkpoint."""
    torch.manual_seed(0)
    before = old.create_model(name, **overrides).eval()
    after = omnikit.create_model(name, **overrides).eval()
    after.load_state_dict(before.state_dict())
    old.save_pretrained(before, directory)
    loaded = omnikit.load_pretrained(directory).eval()
    kwargs = after.contract_inputs([12, 9], seed=1).kwargs
    with torch.no_grad():
        reference = run(before, kwargs)
        return tuple(float((run(model, kwargs) - reference).abs().max()) for model in (after, loaded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", required=True)
    parser.add_argument("--hub", action="store_true", help="also compare load_hf / from_transformers / save_hf")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.old_rev, Path(tmp))
        importlib.import_module("omnikit_old.testing.contract")
        rows = []
        for i, (name, overrides, run) in enumerate(CASES):
            direct, saved = compare(old, name, overrides, run, Path(tmp) / f"ckpt{i}")
            label = name + "".join(f" {k}={v}" for k, v in overrides.items())
            rows.append([label, run.__name__.lstrip("_"), f"{direct:.3g}", f"{saved:.3g}"])
        print(format_table(["model", "check", "max |old - new| (state dict)", "(old checkpoint)"], rows))
        if args.hub:
            from parity_hub import rows as hub_rows

            parity, exports = hub_rows(old, Path(tmp))
            print()
            print(format_table(["path", "part / class", "max |old - new| state dict", "forward"], parity))
            print()
            print(format_table(["save_hf of preset", "config.json old -> new"], exports))


if __name__ == "__main__":
    main()
