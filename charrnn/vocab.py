"""Vocab: the ordered characters of a corpus and fast, whole-buffer encoding to integer ids.

Encoding never loops over characters in Python: `str.translate` maps every character to the
code point of its id, and one `encode` turns the result into a byte buffer that torch views
without a copy (1 byte per character for up to 256 symbols, 2 up to 32,768, else 4).
"""

from __future__ import annotations

import torch

from charrnn.errors import DataError


def describe_chars(chars) -> str:
    """Up to ten characters, sorted and quoted, and how many more."""
    shown = sorted(chars)[:10]
    more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
    return ", ".join(repr(c) for c in shown) + more


class Vocab:
    """Characters <-> ids. Id order is the sorted order of the characters."""

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise DataError("a vocab is a list of distinct single characters")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        self._table = {ord(c): i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id."""
        if len(self) <= 256:
            return torch.uint8
        return torch.int16 if len(self) <= 32768 else torch.int32

    def missing(self, text: str) -> set[str]:
        """Characters of `text` that are not in the vocab."""
        return set(text) - self.index.keys()

    def check(self, text: str, what: str = "text") -> None:
        """Raise a DataError naming any characters of `text` that the vocab lacks."""
        unknown = self.missing(text)
        if unknown:
            raise DataError(f"{what} holds {len(unknown)} character(s) not in the model's vocab: "
                            f"{describe_chars(unknown)}")

    def encode(self, text: str) -> torch.Tensor:
        """Encode a whole text at once into a 1-D tensor of ids (dtype: `self.dtype`)."""
        self.check(text)
        mapped = text.translate(self._table)  # every char becomes chr(its id)
        if self.dtype == torch.uint8:
            buf, dtype = bytearray(mapped.encode("latin-1")), torch.uint8
        elif self.dtype == torch.int16:
            buf, dtype = bytearray(mapped.encode("utf-16-le")), torch.int16
        else:
            buf, dtype = bytearray(mapped.encode("utf-32-le")), torch.int32
        if not buf:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype)

    def decode(self, ids) -> str:
        """Ids (tensor or sequence of ints) back to text."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        chars = self.chars
        return "".join(chars[i] for i in ids)
