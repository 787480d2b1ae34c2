"""Shared fixtures: deterministic seeds and property-test examples, small thread count, CUDA skipping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

import omnikit

# Property tests draw the same examples on every run and machine (a CI run must not find a new case by chance;
# run with --hypothesis-profile=explore to search afresh).
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(name)``: the registered model built with seed 0 in eval mode, once per session."""
    built: dict[str, torch.nn.Module] = {}

    def build(name: str) -> torch.nn.Module:
        if name not in built:
            torch.manual_seed(0)
            built[name] = omnikit.create_model(name).eval()
        return built[name]

    return build


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
