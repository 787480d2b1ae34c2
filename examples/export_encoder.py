"""Export the audio encoder and the Thinker prefill, package them with AOTInductor, run them, compare.

Usage: PYTHONPATH=. python examples/export_encoder.py [--out /tmp/omnikit_aoti]

1. ``torch.export.export`` each model with a dynamic batch and time (``export_dynamic_shapes``);
2. ``torch._inductor.aoti_compile_and_package`` writes a self-contained ``.pt2`` package (C++
   compiled on this machine, CPU);
3. ``torch._inductor.aoti_load_package`` loads it back and runs it on a batch of another size and
   length than the one exported; the result is compared with eager.

Tiny random models, so it runs in a couple of minutes on a CPU (most of it is the C++ compiler).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import omnikit
from omnikit.testing import export_dynamic_shapes, primary_output


def package_and_compare(name: str, out_dir: Path) -> float:
    """Export, package and reload ``name``; return the largest difference to eager on new sizes."""
    torch.manual_seed(0)
    model = omnikit.create_model(name).eval()
    inputs = model.contract_inputs([13, 9])
    program = torch.export.export(model, (), inputs.kwargs, dynamic_shapes=export_dynamic_shapes(inputs))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(out_dir / f"{name}.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    other = model.contract_inputs([11, 6, 4], seed=3)  # another batch size and length
    with torch.no_grad():
        got = primary_output(runner(**other.kwargs))[0]
        want = primary_output(model(**other.kwargs))[0]
    return float((got - want).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/omnikit_aoti"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("qwen2_5_omni_audio_tiny", "thinker_tiny"):
        start = time.perf_counter()
        diff = package_and_compare(name, args.out)
        print(f"{name}: packaged in {time.perf_counter() - start:.0f} s, max |AOTI - eager| = {diff:.2e}")
        assert diff < 1e-4, f"{name}: the packaged program differs from eager by {diff}"


if __name__ == "__main__":
    main()
