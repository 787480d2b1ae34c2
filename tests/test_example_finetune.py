"""examples/finetune_omni.py runs small, offline: every adapter gets a gradient, the LoRA count equals peft's,
the loss falls, resume == uninterrupted bit for bit, the merged export gives the adapted logits in load_hf
and transformers, the loss curve is written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("av")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).parents[1] / "examples" / "finetune_omni.py"


def test_finetune_example_steps(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("finetune_omni", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--steps", "6", "--stop", "2", "--out", str(tmp_path)])
    assert summary["no_gradient"] == []
    assert set(summary["lora_counts"]) == {"audio", "vision", "projector", "thinker"}
    assert sum(summary["lora_counts"].values()) == summary["trainable"]
    assert summary["resume_equal"] and summary["resumed_losses"] == summary["losses"]
    assert summary["losses"][-1] < summary["losses"][0]
    assert summary["export_errors"]["load_hf"] < 1e-5
    if "transformers" in summary["export_errors"]:
        assert summary["export_errors"]["transformers"] < 1e-4
    assert (tmp_path / "loss.png").stat().st_size > 0
