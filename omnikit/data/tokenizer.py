"""Text tokenizers for the processor: a byte-level one for the tiny models, or any callable / HF tokenizer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["ByteTokenizer", "Tokenize", "as_tokenizer"]

#: ``text -> token ids``.
Tokenize = Callable[[str], list[int]]


class ByteTokenizer:
    """UTF-8 bytes as ids (vocab 256), the tiny models' text vocabulary.

    Ids below ``reserved`` stand for padding, media placeholders and markers in the tiny models
    (0..7), so the control bytes ``0..reserved-1`` are refused instead of aliasing them.
    """

    vocab_size = 256

    def __init__(self, reserved: int = 8) -> None:
        self.reserved = reserved

    def encode(self, text: str) -> list[int]:
        ids = list(text.encode("utf-8"))
        bad = sorted({i for i in ids if i < self.reserved})
        if bad:
            raise OmnikitValueError(
                f"`text` expected no control bytes below {self.reserved} (reserved ids) but got bytes {bad}"
            )
        return ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i >= self.reserved).decode("utf-8", errors="replace")

    __call__ = encode


def as_tokenizer(tokenizer: Any) -> Tokenize:
    """``None`` (a :class:`ByteTokenizer`), an object with ``.encode`` (a Hugging Face tokenizer: called
    with ``add_special_tokens=False``) or a callable ``text -> ids``, as one ``text -> list[int]``."""
    if tokenizer is None:
        return ByteTokenizer().encode
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        try:
            takes_special = "add_special_tokens" in inspect.signature(encode).parameters
        except (TypeError, ValueError):
            takes_special = False
        if takes_special:
            return lambda text: list(encode(text, add_special_tokens=False))
        return lambda text: list(encode(text))
    if callable(tokenizer):
        return lambda text: list(tokenizer(text))
    raise OmnikitTypeError(f"`tokenizer` expected None, an object with .encode or a callable but got {type(tokenizer)}")
