"""Helpers for testing omnikit models (the model contract)."""

from omnikit.testing.contract import ContractInputs, SupportsContract, primary_output

__all__ = ["ContractInputs", "SupportsContract", "primary_output"]
