"""One chunk's causal attention over a KV cache: mask-free (log-sum-exp merged segments) vs the masked SDPA path.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_block_attention.py [--chunk 2048]
[--contexts 8192 32768 65536]``. A chunk of ``--chunk`` queries at the end of a ``context``-long
KV cache (1 query head of 16, 1 key/value head: the long-prefill benchmark's attention), timed
side by side in one process (interleaved medians of 5), forward (prefill) and forward + backward
(context-parallel training: the same segments' gradients); ``largest MiB`` is the largest tensor an
operator allocates during one forward (a ``TorchDispatchMode`` count; kernel-internal tiles are
not seen). ``masked`` is ``scaled_dot_product`` with the mask-free path switched off: the
``(chunk x context)`` mask of the path before.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
from common import format_table, interleaved_medians

from omnikit.layers import attention_backends, scaled_dot_product
from omnikit.utils.allocations import LargestAllocation


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masked: bool) -> torch.Tensor:
    offset = k.shape[2] - q.shape[2]
    if masked:
        with mock.patch.object(attention_backends, "block_attention_serves", lambda *args, **kwargs: False):
            return scaled_dot_product(q, k, v, causal=True, q_offset=offset)
    return scaled_dot_product(q, k, v, causal=True, q_offset=offset)


def measure(chunk: int, context: int) -> list[tuple]:
    """Table rows (forward, forward + backward) of one context."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, chunk, 16, generator=g, requires_grad=True)
    k, v = (torch.randn(1, 1, context, 16, generator=g, requires_grad=True) for _ in "kv")
    largest = {}
    for masked in (True, False):
        with torch.no_grad(), LargestAllocation() as mode:
            attend(q, k, v, masked)
        largest[masked] = f"{mode.largest_bytes / 2**20:.2f}"
    with torch.no_grad():
        diff = f"{float((attend(q, k, v, True) - attend(q, k, v, False)).abs().max()):.1e}"
    fns = {}
    for masked in (True, False):
        fns[("fwd", masked)] = lambda m=masked: attend(q.detach(), k.detach(), v.detach(), m)
        fns[("fwd+bwd", masked)] = lambda m=masked: torch.autograd.grad(attend(q, k, v, m).sum(), (q, k, v))
    times = interleaved_medians(fns, repeats=5, warmup=1)
    return [(context, what, f"{times[(what, True)] * 1e3:.1f}", f"{times[(what, False)] * 1e3:.1f}",
             f"{times[(what, False)] / times[(what, True)]:.2f}", *((largest[True], largest[False], diff)
                                                                    if what == "fwd" else ("", "", "")))
            for what in ("fwd", "fwd+bwd")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 65536])
    args = parser.parse_args()
    rows = []
    for context in args.contexts:
        rows += measure(args.chunk, context)
        print(rows[-2], rows[-1], flush=True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, chunk {args.chunk}, 1 head of 16\n")
    print(format_table(["context", "pass", "masked ms", "mask-free ms", "mask-free / masked", "masked largest MiB",
                        "mask-free largest MiB", "max abs diff"], rows))


if __name__ == "__main__":
    main()
