"""Input checks and host reads per call of the omni entry points, at an earlier git revision and on this checkout.

Usage: python benchmarks/count_entry_checks.py --old-rev 0a9c852

For each entry point (``ThinkerTalker.stream`` of ``thinker_talker_tiny``, the forward of
``omni_early_tiny``, and the forward of the published Thinkers ``qwen2_5_omni_thinker_tiny`` /
``qwen3_omni_thinker_tiny`` on their contract batch) one call is traced and counted:

- checks: calls of the helpers of ``omnikit/utils/checks.py`` (``check_tensor``, ``check_ids``, ...),
  split into those on ``input_ids`` (or the ``modality_ids`` derived from it) and all others;
- host reads: ``Tensor.item`` / ``tolist`` / ``bool()`` / ``int()`` / ``float()`` made from omnikit code
  (not from this script, torch or the test helpers).

Counts are exact (they do not depend on the machine's load).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from bench_before_after import import_old
from common import format_table

import omnikit

_HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__")


class Counts:
    """Checks (by helper and argument) and host reads seen while active."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self.checks: Counter[tuple[str, str]] = Counter()
        self.reads: Counter[str] = Counter()

    def _ours(self, frame) -> bool:
        name = frame.f_globals.get("__name__", "")
        return name.split(".")[0] in self.packages

    def profile(self, frame, event: str, arg) -> None:
        if event != "call":
            return
        code = frame.f_code
        if code.co_filename.endswith("utils/checks.py") and code.co_name.startswith("check_"):
            caller = frame.f_back
            if caller is not None and caller.f_code.co_filename.endswith("utils/checks.py"):
                return  # a helper calling another helper is one check
            argument = frame.f_locals.get("name", "?")
            self.checks[(code.co_name, str(argument))] += 1

    def wrap(self, method: str) -> Callable:
        original = getattr(torch.Tensor, method)

        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1)
            if self._ours(caller):
                where = f"{caller.f_globals['__name__'].split('.', 1)[-1]}:{caller.f_code.co_name}"
                self.reads[f"{method} @ {where}"] += 1
            return original(tensor, *args, **kwargs)

        return original, counted

    def run(self, call: Callable[[], object]) -> None:
        originals = {}
        for method in _HOST_READS:
            originals[method], counted = self.wrap(method)
            setattr(torch.Tensor, method, counted)
        sys.setprofile(self.profile)
        try:
            call()
        finally:
            sys.setprofile(None)
            for method, original in originals.items():
                setattr(torch.Tensor, method, original)

    def in_fusion(self) -> int:
        """Host reads made by ``omnikit.fusion`` code (placeholder counts, TMRoPE layout, deepstack)."""
        return sum(n for where, n in self.reads.items() if where.split(" @ ")[1].startswith("fusion."))

    def on_ids(self) -> int:
        return sum(n for (_, arg), n in self.checks.items() if arg in ("input_ids", "modality_ids"))


def entry_points(ok: ModuleType) -> dict[str, Callable[[], object]]:
    """``{label: call}`` built from package ``ok`` (omnikit or the old revision), seed 0."""
    models = importlib.import_module(f"{ok.__name__}.fusion.models")
    torch.manual_seed(0)
    tt = ok.create_model("thinker_talker_tiny").eval()
    ids, media = models.tiny_omni_prompt(torch.Generator().manual_seed(0))
    early = ok.create_model("omni_early_tiny").eval()
    early_kwargs = early.contract_inputs([40, 33], seed=1).kwargs
    calls = {
        "ThinkerTalker.stream (8 tokens)": lambda: list(tt.stream(ids, max_new_tokens=8, max_frames=8, **media)),
        "EarlyFusionOmni forward": lambda: early(**early_kwargs),
    }
    for name in ("qwen2_5_omni_thinker_tiny", "qwen3_omni_thinker_tiny"):
        model = ok.create_model(name).eval()
        kwargs = model.contract_inputs([40, 33], seed=1).kwargs
        calls[f"{name} forward"] = lambda model=model, kwargs=kwargs: model(**kwargs)
    return calls


def count(ok: ModuleType, packages: tuple[str, ...]) -> dict[str, Counts]:
    results = {}
    with torch.no_grad():
        for label, call in entry_points(ok).items():
            call()  # warm caches (lru_cache of item positions) so both revisions count a steady call
            counts = Counts(packages)
            counts.run(call)
            results[label] = counts
    return results


def count_revisions(rev: str) -> tuple[dict[str, Counts], dict[str, Counts]]:
    """The counts at revision ``rev`` and on this checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(rev, Path(tmp))
        return count(old, ("omnikit_old",)), count(omnikit, ("omnikit",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", required=True)
    parser.add_argument("--detail", action="store_true", help="list every check and host read")
    args = parser.parse_args()
    before, after = count_revisions(args.old_rev)
    rows = []
    for label in after:
        b, a = before[label], after[label]
        rows.append([label, b.on_ids(), a.on_ids(), sum(b.checks.values()), sum(a.checks.values()),
                     sum(b.reads.values()), sum(a.reads.values()), b.in_fusion(), a.in_fusion()])
    print(format_table(["entry point (one call)", "input_ids checks before", "after", "all checks before", "after",
                        "host reads before", "after", "in fusion/ before", "after"], rows))
    if args.detail:
        for label in after:
            for which, counts in (("before", before[label]), ("after", after[label])):
                print(f"\n{label} ({which})")
                for (helper, arg), n in sorted(counts.checks.items()):
                    print(f"  {n} x {helper}({arg})")
                for read, n in sorted(counts.reads.items()):
                    print(f"  {n} x {read}")


if __name__ == "__main__":
    main()
