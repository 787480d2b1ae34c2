"""Helpers for testing omnikit models (the model contract)."""

from omnikit.testing.contract import ContractInputs, primary_output

__all__ = ["ContractInputs", "primary_output"]
