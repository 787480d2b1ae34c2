"""omnikit quickstart: build models from the registry and run them on generated inputs.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import time

import torch

import omnikit
from omnikit.utils.summary import format_count, model_summary


def main() -> None:
    torch.manual_seed(0)
    print(f"omnikit {omnikit.__version__}: {len(omnikit.list_models())} registered models")
    for kind in omnikit.KINDS:
        names = omnikit.list_models(kind=kind)
        if names:
            print(f"  {kind:<14} {', '.join(names)}")

    lm = omnikit.create_model("decoder_tiny").eval()
    print("\n" + model_summary(lm))
    ids = torch.randint(0, lm.config.vocab_size, (2, 24))
    start = time.perf_counter()
    with torch.no_grad():
        logits = lm(ids)
    print(f"\ndecoder_tiny: input_ids {tuple(ids.shape)} -> logits {tuple(logits.shape)} "
          f"in {1e3 * (time.perf_counter() - start):.1f} ms")

    preset = omnikit.create_model("qwen3_0_6b", device="meta")
    print(f"qwen3_0_6b on device='meta': {format_count(omnikit.count_parameters(preset))} parameters, no memory used")


if __name__ == "__main__":
    main()
