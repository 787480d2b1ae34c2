"""Every jupytext notebook in docs/notebooks/ executes on the CPU within its time limit (nbclient)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.py"))
TIMEOUT_S = 60  # per notebook, all cells together (kernel start included)


def _too_slow(signum, frame):
    raise TimeoutError(f"a notebook ran past its {TIMEOUT_S} s limit")


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "build_your_own", "audio_tokenizers", "moe_routing"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch) -> None:
    repo = str(path.parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": repo}})
    previous = signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(TIMEOUT_S)
    try:
        client.execute()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
