"""Which registered ``*_tiny`` models compile with ``fullgraph=True`` and export, and why not.

For every tiny model, with its own ``contract_inputs``:

- ``forward``: ``torch.compile(model, fullgraph=True, backend="eager")`` in eval mode (Dynamo
  tracing only: a graph break or a data-dependent branch fails here whatever the backend);
- ``train``: ``torch.compile(model, fullgraph=True, backend="aot_eager")`` in train mode, then a
  backward through the compiled forward (AOTAutograd traces the backward too);
- ``export``: ``torch.export.export`` with a dynamic batch and dynamic time dims, for encoders,
  decoders (prefill), MoE layers and codecs; the exported program must equal eager.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/compile_status.py [pattern]``; prints a markdown table
and the counts. Compiles tiny models only; takes a few minutes on one core.
"""

from __future__ import annotations

import sys
import traceback

import torch
from common import format_table
from torch import nn

import omnikit
from omnikit.testing import ContractInputs, export_dynamic_shapes, primary_output

EXPORT_KINDS = ("audio_encoder", "frame_encoder", "temporal", "decoder", "moe", "codec")
LENGTHS = (13, 9)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return omnikit.create_model(name)


def cause(err: BaseException) -> str:
    """A one-line reason: the first line of the message, with the user frame it came from."""
    text = str(err).strip().splitlines()
    head = text[0] if text else type(err).__name__
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/omnikit/" in f.filename]
    where = ""
    for line in text:  # Dynamo quotes the user frames in its message, innermost last
        if "omnikit/" in line and ", line " in line:
            where = line.strip().split("omnikit/")[-1].replace('"', "")
    if not where and frames:
        where = f"{frames[-1].filename.split('omnikit/')[-1]}:{frames[-1].lineno}"
    head = head.replace("|", "/")[:110]
    return f"{type(err).__name__}: {head}" + (f" @ {where}" if where else "")


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3)


def try_forward(model: nn.Module, inputs: ContractInputs) -> str:
    torch._dynamo.reset()
    compiled = torch.compile(model.eval(), fullgraph=True, backend="eager")
    with torch.no_grad():
        ok = close(primary_output(compiled(**inputs.kwargs))[0], primary_output(model(**inputs.kwargs))[0])
    return "ok" if ok else "MISMATCH"


def try_train(model: nn.Module, inputs: ContractInputs) -> str:
    torch._dynamo.reset()
    compiled = torch.compile(model.train(), fullgraph=True, backend="aot_eager")
    out = primary_output(compiled(**inputs.kwargs))[0]
    out.float().square().mean().backward()
    return "ok"


def try_export(model: nn.Module, inputs: ContractInputs) -> str:
    model.eval()
    program = torch.export.export(model, (), inputs.kwargs, dynamic_shapes=export_dynamic_shapes(inputs))
    other = model.contract_inputs([11, 6, 4], seed=3)  # another batch size and length
    with torch.no_grad():
        for case in (inputs, other):
            got = primary_output(program.module()(**case.kwargs))[0]
            if not close(got, primary_output(model(**case.kwargs))[0]):
                return "MISMATCH"
    return "ok"


def attempt(fn, model: nn.Module, inputs: ContractInputs) -> tuple[str, str]:
    try:
        return fn(model, inputs), ""
    except Exception as err:  # the point is to classify every failure
        return "fail", cause(err)


def main(pattern: str = "*_tiny") -> None:
    rows, counts = [], {"forward": [0, 0], "train": [0, 0], "export": [0, 0]}
    for name in omnikit.list_models(pattern):
        kind = omnikit.model_info(name).kind
        model = build(name)
        inputs = model.contract_inputs(LENGTHS)
        results = {"forward": attempt(try_forward, model, inputs), "train": attempt(try_train, model, inputs)}
        if kind in EXPORT_KINDS:
            results["export"] = attempt(try_export, model, inputs)
        reasons = "; ".join(f"{k}: {why}" for k, (_, why) in results.items() if why)
        for key, (status, _) in results.items():
            counts[key][0] += status == "ok"
            counts[key][1] += 1
        rows.append([name, kind, *(results.get(k, ("-", ""))[0] for k in counts), reasons])
        print(f"{name}: {[r[0] for r in results.values()]} {reasons}", file=sys.stderr, flush=True)
    print(format_table(["model", "kind", "compile fwd", "compile train", "export", "first failure"], rows))
    print()
    for key, (ok, total) in counts.items():
        print(f"- {key}: {ok}/{total}")


if __name__ == "__main__":
    main(*sys.argv[1:])
