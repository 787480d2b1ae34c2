"""Each of ``benchmarks/fuzz_cases_round4.py``'s cases (this round's entry points with a bad argument) gives a
clear error naming that argument, or, for an edge input that must work, a finite answer: the same
classification as ``benchmarks/fuzz_entry_points.py --family round4``, one test per case."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fuzz_cases_round4 import round4_cases
from fuzz_entry_points import classify

CASES = {case.label: case for case in round4_cases()}


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(CASES))
def test_round4_case_is_clear_or_works(label: str) -> None:
    case = CASES[label]
    outcome, detail = classify(case, memory_mb=2000.0)
    if case.arg is not None:
        expected = ("clear",)
    else:
        expected = ("works", "clear") if case.may_refuse else ("works",)
    assert outcome in expected, f"{outcome}: {detail}"
