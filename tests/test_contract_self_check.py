"""The contract suite must fail when a model breaks a line of the contract.

Each case registers a copy of ``decoder_tiny`` with one deliberate defect and runs the
matching contract check on it, expecting it to fail.
"""

from __future__ import annotations

import pytest
import test_model_contract as contract
import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.registry import _REGISTRY, configure, register_model


class FaultyLM(CausalLM):
    """decoder_tiny with one defect switched on."""

    def __init__(self, config: DecoderConfig, fault: str) -> None:
        super().__init__(config)
        self.fault = fault
        if fault == "unused_parameter":
            self.unused = nn.Parameter(torch.zeros(3))
        if fault == "unsaved_state":
            self.register_buffer("noise", torch.randn(config.vocab_size), persistent=False)
        if fault == "norm_in_bf16":
            self.decoder.norm.keep_fp32 = False

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        logits = super().forward(input_ids, **kwargs)
        if self.fault == "nondeterministic":
            logits = F.dropout(logits, 0.5, training=True)
        if self.fault == "sees_padding":
            logits = logits + logits.mean(dim=1, keepdim=True)
        if self.fault == "sees_future":
            logits = logits + logits.flip(1)
        if self.fault == "unsaved_state":
            logits = logits + self.noise
        if self.fault == "checkpointing_differs" and self.decoder.gradient_checkpointing:
            logits = logits * 1.01
        return logits


FAULTS = {
    "nondeterministic": contract.test_eval_is_deterministic,
    "sees_padding": contract.test_batch_equals_items_and_padding_is_invisible,
    "sees_future": contract.test_streaming_equals_full_and_ignores_the_future,
    "unused_parameter": contract.test_backward_reaches_every_trainable_parameter,
    "unsaved_state": contract.test_save_load_roundtrip,
    "norm_in_bf16": contract.test_bf16_runs_with_norms_and_routers_in_fp32,
    "checkpointing_differs": contract.test_gradient_checkpointing_changes_nothing,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_contract_catches(fault: str, tmp_path) -> None:
    name = f"faulty_{fault}"

    def entrypoint(**overrides) -> FaultyLM:
        config = configure(DecoderConfig, name, overrides, dim=32, depth=1, num_heads=2, mlp_hidden=64,
                           vocab_size=64)
        return FaultyLM(config, fault)

    register_model(kind="custom", name=name)(entrypoint)
    try:
        check = FAULTS[fault]
        args = (name, tmp_path) if check is contract.test_save_load_roundtrip else (name,)
        with pytest.raises(AssertionError):
            check(*args)
    finally:
        del _REGISTRY[name]


def test_healthy_model_passes_the_same_checks(tmp_path) -> None:
    for check in FAULTS.values():
        args = ("decoder_tiny", tmp_path) if check is contract.test_save_load_roundtrip else ("decoder_tiny",)
        check(*args)
