"""Small helpers shared by every block family."""

from omnikit.utils.checks import (
    OmnikitTypeError,
    OmnikitValueError,
    check_choice,
    check_lengths,
    check_positive,
    check_tensor,
)

__all__ = [
    "OmnikitTypeError",
    "OmnikitValueError",
    "check_choice",
    "check_lengths",
    "check_positive",
    "check_tensor",
]
