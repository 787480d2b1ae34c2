"""Load a published checkpoint from a local Hugging Face snapshot and use it.

    python examples/load_pretrained.py ~/.cache/huggingface/hub/models--Qwen--Qwen3-0.6B/snapshots/<rev>
    python examples/load_pretrained.py                 # offline: writes a tiny random Qwen3 snapshot first
    python examples/load_pretrained.py SNAPSHOT --part audio_encoder   # a Whisper snapshot's encoder

For a causal LM it prints the parameter count, compares the logits of a left-padded batch with
transformers' (when transformers is installed) and decodes a few tokens greedily.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import omnikit
from omnikit.convert import hf_inputs, load_hf, save_hf
from omnikit.models.language_model import CausalLM


def tiny_random_snapshot(directory: Path) -> Path:
    """A Qwen3-layout snapshot of omnikit's ``decoder_tiny`` with random weights, in 3+ shards."""
    torch.manual_seed(0)
    save_hf(omnikit.create_model("decoder_tiny"), directory, max_shard_size="60KB")
    return directory


def compare_with_transformers(model: torch.nn.Module, snapshot: Path, batch: dict[str, torch.Tensor]) -> None:
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: skipping the comparison")
        return
    reference = transformers.AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()
    with torch.no_grad():
        ours, theirs = model(**hf_inputs(model, batch)), reference(**batch).logits
    valid = batch["attention_mask"].bool()
    error = float((ours[valid] - theirs[valid]).abs().max() / theirs[valid].abs().max())
    print(f"max relative logit difference vs transformers: {error:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("snapshot", nargs="?", help="Hub-layout directory; default: a tiny random one")
    parser.add_argument("--part", default=None)
    args = parser.parse_args()
    snapshot = Path(args.snapshot) if args.snapshot else tiny_random_snapshot(Path(tempfile.mkdtemp()) / "tiny")
    model = load_hf(snapshot, part=args.part, dtype=torch.float32)
    print(f"{type(model).__name__} from {snapshot}: {omnikit.count_parameters(model):,} parameters")
    if not isinstance(model, CausalLM):
        print(model)
        return
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    batch = {"input_ids": ids, "attention_mask": mask}
    compare_with_transformers(model, snapshot, batch)
    tokens = model.generate(ids[1:], max_new_tokens=6).tokens
    print("greedy continuation of the second prompt:", tokens.tolist())


if __name__ == "__main__":
    main()
