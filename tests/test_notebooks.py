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


def test_docs_site_executes_the_notebooks() -> None:
    """The site shows each notebook with its outputs: mkdocs-jupyter executes them at build time (a failing
    cell fails the strict build), and the notebooks that plot select the inline backend, so the figures
    appear even where CI sets MPLBACKEND=Agg."""
    config = (Path(__file__).resolve().parents[1] / "mkdocs.yml").read_text(encoding="utf-8")
    plugin = config.split("- mkdocs-jupyter:", 1)[1].split("\n  - ", 1)[0]
    assert "execute: true" in plugin and "allow_errors: false" in plugin
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        if "import matplotlib" in text:
            assert "# %matplotlib inline" in text, path.name
