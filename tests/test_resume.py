"""Resumable checkpoints: ``save_distributed`` / ``load_distributed`` / ``read_extra`` with an optimizer,
a scheduler, the data position and RNG states, LoRA adapters; resume == uninterrupted bit for bit on
the CPU in one process (under FSDP over 2 gloo ranks: the ``resume`` scenario of the quick launch in
``tests/test_distributed.py``); a save that raises or is killed leaves the previous checkpoint whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_worker import lora_decoder, train_lora

import omnikit
from omnikit.distributed import checkpoint as ckpt
from omnikit.distributed import load_distributed, read_extra, rng_state, save_distributed, set_rng_state
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

pytest.importorskip("peft")


def _equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_in_one_process(tmp_path: Path) -> None:
    whole = train_lora(lora_decoder(), range(6))
    first = train_lora(lora_decoder(), range(3), tmp_path, save_at=3)
    resumed = train_lora(lora_decoder(), range(3, 6), tmp_path)
    assert len(whole) == 2 * 2 * 5  # A and B of 5 linears in 2 blocks
    assert _equal(resumed, whole)
    assert not _equal(first, whole)  # the second half did train
    assert (tmp_path / "LATEST").read_text().strip() == "state-000001"


def _two_phase(steps: range, directory: Path, save_at: int | None = None, compiled: bool = False
               ) -> dict[str, torch.Tensor]:
    """AdamW on two linears; the second gets its first gradient at step 2 (after a save at step 2)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    if compiled:  # parameter names gain `_orig_mod.`; the checkpoint's do not
        model = torch.compile(model, backend="eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    if steps.start:
        load_distributed(model, directory, optimizer=optimizer)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    for step in steps:
        first = model._orig_mod[0] if compiled else model[0]
        loss = first(x).square().mean() if step < 2 else model(x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == save_at:
            save_distributed(model, directory, optimizer=optimizer)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("compiled", [False, True])
def test_resume_when_some_parameters_had_no_gradient_before_the_save(tmp_path: Path, compiled: bool) -> None:
    whole = _two_phase(range(4), tmp_path, compiled=compiled)
    _two_phase(range(2), tmp_path, save_at=2, compiled=compiled)
    resumed = _two_phase(range(2, 4), tmp_path, compiled=compiled)
    assert _equal(resumed, whole)


def test_extra_round_trips_types_and_bits(tmp_path: Path) -> None:
    model = omnikit.create_model("decoder_tiny")
    extra = {"step": 7, "lr": 0.1 + 1e-17, "name": "run", "none": None, "pos": (3, [1, 2]),
             "gen": torch.Generator().manual_seed(1).get_state(), "bf16": torch.randn(3, 2).bfloat16(),
             "np": np.arange(5, dtype=np.uint32), "rng": rng_state()}
    save_distributed(model, tmp_path, extra=extra)
    back = read_extra(tmp_path)
    assert back.keys() == extra.keys()
    assert back["pos"] == (3, [1, 2]) and back["lr"] == extra["lr"] and back["none"] is None
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], extra["bf16"])
    assert back["np"].dtype == np.uint32 and (back["np"] == extra["np"]).all()
    draws = torch.rand(3), np.random.rand(2)
    set_rng_state(back["rng"])
    assert torch.equal(torch.rand(3), draws[0]) and (np.random.rand(2) == draws[1]).all()
    with pytest.raises(OmnikitTypeError, match=r"`extra\['f'\]` expected JSON values.*got builtin_function"):
        save_distributed(model, tmp_path / "bad", extra={"f": len})
    with pytest.raises(OmnikitValueError, match="holds no optimizer state"):
        load_distributed(model, tmp_path, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(OmnikitValueError, match="`directory` expected a save_distributed checkpoint"):
        read_extra(tmp_path / "missing")


def _saved(tmp_path: Path, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = omnikit.create_model("decoder_tiny")
    save_distributed(model, tmp_path, extra={"seed": seed})
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _check_previous(tmp_path: Path, expected: dict) -> None:
    loaded = load_distributed(omnikit.create_model("decoder_tiny"), tmp_path)
    assert _equal(loaded.state_dict(), expected)
    assert read_extra(tmp_path) == {"seed": 0}


@pytest.mark.parametrize("when", ["shards", "pointer"])
def test_a_save_that_raises_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch, when: str) -> None:
    _, expected = _saved(tmp_path, 0)
    torch.manual_seed(1)
    other = omnikit.create_model("decoder_tiny")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    real_save = ckpt.dcp.save
    if when == "shards":  # part of the shards are written, then the write fails
        monkeypatch.setattr(ckpt.dcp, "save", lambda state, **kw: (real_save({"model": {}}, **kw), fail()))
    else:  # every file is written, then the write of LATEST fails half way
        real_write = ckpt.write_atomically

        def half_then_fail(temp: Path) -> None:
            temp.write_text("state-0")
            fail()

        monkeypatch.setattr(ckpt, "write_atomically", lambda out, writers: real_write(
            out, [(name, half_then_fail if name == "LATEST" else write) for name, write in writers]))
    with pytest.raises(OSError, match="disk full"):
        save_distributed(other, tmp_path, extra={"seed": 1})
    _check_previous(tmp_path, expected)
    monkeypatch.undo()
    save_distributed(other, tmp_path, extra={"seed": 1})  # the next save cleans the partial folder up
    assert [p.name for p in tmp_path.glob("state-*")] == ["state-000003"]
    assert read_extra(tmp_path) == {"seed": 1}


KILLED = textwrap.dedent("""
    import sys, time, torch, omnikit
    from omnikit.distributed import checkpoint as ckpt
    real = ckpt.dcp.save
    def slow(state, **kw):
        real(state, **kw)
        open(sys.argv[2], "w").close()  # the shards are on disk, LATEST not yet switched
        time.sleep(60)
    ckpt.dcp.save = slow
    torch.manual_seed(1)
    ckpt.save_distributed(omnikit.create_model("decoder_tiny"), sys.argv[1], extra={"seed": 1})
""")


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    directory, marker = tmp_path / "ckpt", tmp_path / "in_write"
    _, expected = _saved(directory, 0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(directory), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the child never reached the write"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert len(list(directory.glob("state-*"))) == 2  # the killed save's folder is there, not named by LATEST
    _check_previous(directory, expected)
