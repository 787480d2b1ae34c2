"""omnikit quickstart: build an omni model from the registry and run it on generated audio, video and text.

Run: python examples/quickstart.py [--out outputs/quickstart]

1. lists the registry by kind;
2. builds ``thinker_talker_tiny`` and prints its module summary with parameter counts;
3. runs the omni demo: a generated video clip, generated audio and a text question go in,
   text tokens and speech codes stream out, the codes are decoded to a waveform by a causal
   codec chunk by chunk, and a WAV file plus a picture of the token layout are written;
4. counts a published-size preset on ``device="meta"`` (no memory used).
"""

from __future__ import annotations

import argparse

import torch
from omni_demo import run_omni_demo  # examples/omni_demo.py, beside this script

import omnikit
from omnikit.utils.summary import format_count, model_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart", help="where the WAV and the layout plot go")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(f"omnikit {omnikit.__version__}: {len(omnikit.list_models())} registered models")
    for kind in omnikit.KINDS:
        names = omnikit.list_models(kind=kind)
        if names:
            print(f"  {kind:<14} {', '.join(names)}")

    model = omnikit.create_model("thinker_talker_tiny")
    print("\nthinker_talker_tiny\n" + model_summary(model))

    print("\nomni demo: video + audio + text in, text + speech out")
    result = run_omni_demo(args.out)
    print(f"wrote {result['wav_path']}")

    for name in ("qwen2_5_omni_7b_thinker", "qwen3_omni_30b_a3b_thinker"):
        preset = omnikit.create_model(name, device="meta")
        print(f"{name} on device='meta': {format_count(omnikit.count_parameters(preset))} parameters, no memory used")


if __name__ == "__main__":
    main()
