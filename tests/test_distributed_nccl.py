"""omnikit.distributed on NCCL, one process on ``cuda:0``: a smoke test of the GPU path.

Two NCCL ranks cannot share one GPU, so world size 1 is the most one device allows: it runs the
real NCCL collectives (FSDP2's all-gather and reduce-scatter, the expert all-to-alls, DTensor
tensor-parallel placements) over one rank and compares one step's loss and gradients with the
unwrapped model on the same device. Skipped without CUDA; multi-GPU NCCL stays untested.

Run: ``pytest -q tests/test_distributed_nccl.py``.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist
from test_distributed import _check, _launch

pytestmark = pytest.mark.cuda

SCENARIOS = ["decoder/dp_shard1", "decoder/tp1", "moe_skew/dp_shard1", "moe_skew/ep1", "moe_skew/tp1",
             "moe/dp_shard1_x_ep1"]


@pytest.fixture(scope="module")
def nccl_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not dist.is_nccl_available():
        pytest.skip("torch was built without NCCL")
    return _launch(1, SCENARIOS, tmp_path_factory.mktemp("nccl"), backend="nccl")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_nccl_rank_matches_the_unwrapped_model(scenario: str, nccl_results: dict) -> None:
    _check(scenario, nccl_results[scenario])
    assert nccl_results[scenario]["device"] == "cuda:0"
