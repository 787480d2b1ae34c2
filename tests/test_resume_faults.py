"""Fault injection for resumable training (issue 28 item 7), each fault real, in a child process:

- ``kill -9`` in the middle of a training step, after a checkpoint: the run resumed from that checkpoint
  equals the uninterrupted run bit for bit;
- ``kill -9`` in the middle of a save that writes optimizer and scheduler state: the previous checkpoint
  (with its optimizer state) resumes to the uninterrupted run;
- a full disk (the operating system refuses the write: the file-size limit ``RLIMIT_FSIZE``, with
  ``SIGXFSZ`` ignored so ``write`` fails with ``EFBIG`` as on a full device) during a save: the save raises
  ``OSError`` and the previous checkpoint resumes to the uninterrupted run;
- one of two gloo ranks killed while the others write: the previous checkpoint, written by both ranks,
  still loads.

The training loop is ``tests/dist_worker.py``'s ``train_lora``: LoRA on ``decoder_tiny``, AdamW, a
warm-up/decay scheduler, a saved data order and RNG state.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from dist_worker import lora_decoder, train_lora

import omnikit
from omnikit.distributed import load_distributed, read_extra

pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
SAVED_AT = 3

PRELUDE = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    sys.path.insert(0, os.path.join(os.environ["OMNIKIT_ROOT"], "tests"))
    from dist_worker import lora_decoder, train_lora
    directory, marker = sys.argv[1], sys.argv[2]

    def stall(why):
        open(marker, "w").write(why)  # the parent kills this process now
        time.sleep(120)
        sys.exit("never killed")
""")

KILLED_MID_STEP = PRELUDE + textwrap.dedent("""
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}
    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step index 4, after the checkpoint at 3: half the parameters updated, then killed
            params = [p for group in self.param_groups for p in group["params"]]
            with torch.no_grad():
                for p in params[: len(params) // 2]:
                    p.add_(1.0)
            stall("mid-step")
        return real_step(self, *args, **kwargs)
    torch.optim.AdamW.step = step
    train_lora(lora_decoder(), range(6), directory, save_at=3)
""")

KILLED_MID_SAVE = PRELUDE + textwrap.dedent("""
    from omnikit.distributed import checkpoint as ckpt
    real_save = ckpt.dcp.save
    saves = {"n": 0}
    def save(state, **kwargs):
        saves["n"] += 1
        real_save(state, **kwargs)
        if saves["n"] == 2:  # weights and optimizer state of the second save on disk, LATEST not switched
            assert "optimizer" in state
            stall("mid-save")
    ckpt.dcp.save = save
    train_lora(lora_decoder(), range(6), directory, save_at=3)  # saves at 3 ...
    train_lora(lora_decoder(), range(3, 6), directory, save_at=5)  # ... resumes and saves again at 5
""")

DISK_FULL = PRELUDE + textwrap.dedent("""
    import resource
    train_lora(lora_decoder(), range(3), directory, save_at=3)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        train_lora(lora_decoder(), range(3, 6), directory, save_at=5)
    except OSError as exc:  # the writer's own error, not DCP's CheckpointException
        sys.exit(f"save failed: {type(exc).__name__}: {exc}"[:300])
    sys.exit("the save did not fail")
""")

KILLED_RANK = textwrap.dedent("""
    import os, signal, sys, time
    import torch, torch.distributed as dist
    sys.path.insert(0, os.path.join(os.environ["OMNIKIT_ROOT"], "tests"))
    import omnikit
    from omnikit.distributed import build_mesh, parallelize, save_distributed
    from omnikit.distributed import checkpoint as ckpt
    directory, marker = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    mesh = build_mesh("cpu", dp_shard=2)
    torch.manual_seed(0)
    model = parallelize(omnikit.create_model("decoder_tiny"), mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(input_ids=torch.ones(1, 4, dtype=torch.long)).square().mean().backward()
    optimizer.step()
    save_distributed(model, directory, optimizer=optimizer, extra={"step": 1})
    real_save = ckpt.dcp.save
    def save(state, **kwargs):
        if dist.get_rank() == 1:
            open(marker, "w").write("rank 1 dies")
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(state, **kwargs)
    ckpt.dcp.save = save
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save_distributed(model, directory, optimizer=optimizer, extra={"step": 2})
""")


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return {**os.environ, "PYTHONPATH": path, "OMNIKIT_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}


def _kill_when_stalled(procs: list[subprocess.Popen], marker: Path) -> None:
    """SIGKILL every process once ``marker`` exists (one of them stalls inside the fault)."""
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), f"no process reached the fault: exit codes {[p.poll() for p in procs]}"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL) if proc.poll() is None else None
            proc.wait()


def _run_child(script: str, tmp_path: Path) -> Path:
    directory, marker = tmp_path / "ckpt", tmp_path / "fault"
    proc = subprocess.Popen([sys.executable, "-c", script, str(directory), str(marker)], env=_env())
    _kill_when_stalled([proc], marker)
    assert proc.returncode == -signal.SIGKILL
    return directory


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, torch.Tensor]:
    return train_lora(lora_decoder(), range(STEPS))


def _resumes_to(directory: Path, expected: dict[str, torch.Tensor], step: int) -> None:
    assert read_extra(directory)["step"] == step
    resumed = train_lora(lora_decoder(), range(step, STEPS), directory)
    assert sorted(resumed) == sorted(expected)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_kill_9_mid_step_then_resume_equals_uninterrupted(tmp_path: Path, uninterrupted: dict) -> None:
    directory = _run_child(KILLED_MID_STEP, tmp_path)
    _resumes_to(directory, uninterrupted, SAVED_AT)


@pytest.mark.slow
def test_kill_9_mid_save_with_optimizer_state_resumes_from_the_previous(tmp_path: Path, uninterrupted: dict
                                                                       ) -> None:
    directory = _run_child(KILLED_MID_SAVE, tmp_path)
    assert len(list(directory.glob("state-*"))) == 2  # the killed save's folder, not named by LATEST
    _resumes_to(directory, uninterrupted, SAVED_AT)


@pytest.mark.slow
def test_disk_full_during_save_raises_and_resumes_from_the_previous(tmp_path: Path, uninterrupted: dict) -> None:
    directory, marker = tmp_path / "ckpt", tmp_path / "unused"
    done = subprocess.run([sys.executable, "-c", DISK_FULL, str(directory), str(marker)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    # the operating system's write error itself reaches the caller (not DCP's CheckpointException, a
    # BaseException that a training loop's `except Exception` would miss)
    assert done.returncode == 1 and "save failed: OSError: [Errno 27] File too large" in done.stderr, done.stderr
    _resumes_to(directory, uninterrupted, SAVED_AT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_rank_killed_during_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    directory, marker = tmp_path / "ckpt", tmp_path / "fault"
    env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", KILLED_RANK, str(directory), str(marker)],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in range(2)]
    _kill_when_stalled(procs, marker)
    # the previous checkpoint, written by two ranks, loads whole in one process (weights and optimizer state):
    # it equals one step of the same training in one process (each rank saw the same batch)
    torch.manual_seed(0)
    expected = omnikit.create_model("decoder_tiny")
    step = torch.optim.AdamW(expected.parameters(), lr=0.1)
    expected(input_ids=torch.ones(1, 4, dtype=torch.long)).square().mean().backward()
    step.step()
    model = omnikit.create_model("decoder_tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    load_distributed(model, directory, optimizer=optimizer)
    assert read_extra(directory) == {"step": 1}
    for (name, got), want in zip(model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)
    assert all(len(optimizer.state[p]) == 3 for p in model.parameters())  # step, exp_avg, exp_avg_sq
