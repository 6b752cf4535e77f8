"""Vocab: the ordered characters of a corpus and fast, piece-by-piece encoding to integer ids.

Encoding never loops over characters in Python: each piece of a text (ENCODE_CHUNK characters)
becomes a tensor of code points, which a code point -> id table (`Vocab.table`) turns into ids,
written straight into their slice of the result (1 byte per character for up to 256 symbols, 2
up to 32,768, else 4). So encoding a long text takes the ids and a few hundred KB, never a
copy of the whole text.
"""

from __future__ import annotations

import torch

from charrnn.errors import DataError

ENCODE_CHUNK = 1 << 16  # characters encoded (or decoded) at a time


def code_points(piece: bytes | str) -> torch.Tensor:
    """The code points of a piece of text: uint8 for ASCII bytes, else int32."""
    if isinstance(piece, bytes):
        return torch.frombuffer(bytearray(piece), dtype=torch.uint8)
    return torch.frombuffer(bytearray(piece.encode("utf-32-le", "surrogatepass")),
                            dtype=torch.int32)


def lookup(table: torch.Tensor, piece: bytes | str, out: torch.Tensor) -> int:
    """Write the ids of `piece` into the start of `out` through a code point -> id table;
    returns how many. An IndexError or RuntimeError: a code point beyond the table."""
    points = code_points(piece)
    torch.index_select(table, 0, points.int() if points.dtype == torch.uint8 else points,
                       out=out[:len(points)])
    return len(points)


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
        self._table: torch.Tensor | None = None

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

    @property
    def table(self) -> torch.Tensor:
        """Code point -> id (of `self.dtype`), for code points up to the largest in the vocab;
        a code point not in the vocab maps to 0 (check the text first)."""
        if self._table is None:
            codes = torch.tensor([ord(c) for c in self.chars], dtype=torch.int64)
            self._table = torch.zeros(int(codes.max()) + 1 if len(codes) else 0,
                                      dtype=self.dtype)
            self._table[codes] = torch.arange(len(codes)).to(self.dtype)
        return self._table

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
        """Encode a text into a 1-D tensor of ids (dtype: `self.dtype`), piece by piece."""
        self.check(text)
        ids = torch.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start:start + ENCODE_CHUNK]
            lookup(self.table, piece.encode("ascii") if piece.isascii() else piece,
                   ids[start:])
        return ids

    def decode(self, ids) -> str:
        """Ids (tensor or sequence of ints) back to text."""
        chars = self.chars
        if not isinstance(ids, torch.Tensor):
            return "".join(chars[i] for i in ids)
        ids = ids.flatten()
        return "".join("".join(map(chars.__getitem__, ids[i:i + ENCODE_CHUNK].tolist()))
                       for i in range(0, len(ids), ENCODE_CHUNK))
