"""benchmarks/regressions.py runs end to end: every case builds and runs (--dry), and a short timed run
compares with and records a baseline. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def regressions():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import regressions
        yield regressions
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_case_runs_dry(regressions, capsys) -> None:
    assert regressions.main(["--dry"]) == {}
    out = capsys.readouterr().out
    assert all(f"ok: {name}" in out for name in regressions.CASES)


def test_recorded_baseline_is_compared(regressions, tmp_path, capsys) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"ratios": {"MoE fwd+bwd / dense SwiGLU of the active width": 1.0}}))
    results = regressions.main(["--only", "active width", "--repeats", "1", "--baseline", str(baseline), "--record"])
    assert list(results) == ["MoE fwd+bwd / dense SwiGLU of the active width"]
    out = capsys.readouterr().out
    assert "moved beyond the noise:" in out and "| baseline |" in out
    stored = json.loads(baseline.read_text())
    assert stored["ratios"]["MoE fwd+bwd / dense SwiGLU of the active width"] == results[
        "MoE fwd+bwd / dense SwiGLU of the active width"]["ratio"]


def test_shipped_baseline_names_every_case(regressions) -> None:
    stored = json.loads(regressions.BASELINE.read_text())
    assert set(stored["ratios"]) == set(regressions.CASES)
