"""Context parallel ("cp" mesh dimension) on gloo: loss and gradients equal one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import omnikit
from omnikit.distributed.cp import apply_context_parallel, cp_media_rows, cp_positions
from omnikit.distributed.mesh import check_mesh
from omnikit.layers import Attention

WORKER = Path(__file__).with_name("cp_worker.py")
TOL = 1e-5
#: The Gated DeltaNet's A_log gradient is tiny (norm ~1e-5) and computed in float32 inside the layer whatever
#: the model's dtype: in ONE process, the sum of its gradients over the 4 shards' positions differs from the
#: gradient of the whole loss by 2.7e-5 (relative), so cp (which sums exactly those parts) gets the same.
HYBRID_GRAD_TOL = 1e-4
LAUNCHES = {
    2: ["dense/cp", "moe/cp", "thinker/cp", "hybrid/cp"],
    4: ["dense/cp4", "dense/dp_shard_x_cp", "moe/dp_shard_x_cp", "thinker/dp_shard_x_cp", "hybrid/cp4"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_positions_are_load_balanced() -> None:
    assert cp_positions(8, (0, 2)).tolist() == [0, 1, 6, 7]
    assert cp_positions(8, (1, 2)).tolist() == [2, 3, 4, 5]
    every = torch.cat([cp_positions(16, (r, 4)) for r in range(4)])
    assert sorted(every.tolist()) == list(range(16))
    causal_work = [int(cp_positions(16, (r, 4)).add(1).sum()) for r in range(4)]  # keys each rank's queries see
    assert len(set(causal_work)) == 1
    with pytest.raises(ValueError, match="multiple of 2 \\* cp = 4"):
        cp_positions(6, (0, 2))


def test_media_rows_follow_their_placeholders_into_the_shard() -> None:
    placeholders = torch.zeros(2, 8, dtype=torch.bool)
    placeholders[0, 1:3] = True  # rows 0, 1: positions 1, 2 (rank 0 and rank 1 at cp 2)
    placeholders[1, 5:7] = True  # rows 2, 3: positions 5, 6 (rank 1 and rank 0)
    assert cp_media_rows(placeholders, cp_positions(8, (0, 2))).tolist() == [0, 3]
    assert cp_media_rows(placeholders, cp_positions(8, (1, 2))).tolist() == [1, 2]
    with pytest.raises(ValueError, match="placeholders"):
        cp_media_rows(placeholders.long(), torch.arange(4))


def test_unsupported_combinations_are_refused() -> None:
    class Named:
        def __init__(self, *names: str) -> None:
            self.mesh_dim_names = names

    assert check_mesh(Named("dp_shard", "cp")) == ("dp_shard", "cp")
    for names in (("cp", "tp"), ("dp_replicate", "cp"), ("cp", "ep")):
        with pytest.raises(ValueError, match="'cp' takes at most 'dp_shard'"):
            check_mesh(Named(*names))
    with pytest.raises(TypeError, match="no decoder"):
        apply_context_parallel(omnikit.create_model("moe_tiny"), None)
    attn = Attention(16, 2)
    attn.context_parallel = object()
    with pytest.raises(ValueError, match="context parallel attention takes no padding"):
        attn(torch.randn(1, 4, 16), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("world", sorted(LAUNCHES))
def test_cp_equals_one_process(world: int, tmp_path: Path) -> None:
    """Dense and MoE decoders, an M-RoPE Thinker whose audio item crosses the shard boundary and the
    hybrid Gated DeltaNet + attention MoE stack, cp over 2 and 4 ranks and dp_shard x cp (FSDP over both)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(world), str(_free_port()), str(tmp_path), *LAUNCHES[world]],
        env=env, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / f"cp_{world}.json").read_text())
    for name in LAUNCHES[world]:
        result = results[name]
        assert "error" not in result, f"{name}: {result.get('error')}"
        grad_tol = HYBRID_GRAD_TOL if name.startswith("hybrid") else TOL
        assert result["loss_rel"] <= TOL and result["out_rel"] <= TOL and result["grad_rel"] <= grad_tol, (name, result)
        assert result["missing_grads"] == [], (name, result)
