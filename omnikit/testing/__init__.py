"""Helpers for testing omnikit models (the model contract)."""

from omnikit.testing.contract import ContractInputs, export_dynamic_shapes, primary_output

__all__ = ["ContractInputs", "export_dynamic_shapes", "primary_output"]
