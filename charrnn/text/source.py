"""Where text comes from: a file, a folder, a glob pattern or stdin, read piece by piece.

A corpus of 100 MB is never held whole as bytes or as a string: `pieces` reads each file in
blocks of 256 KB and decodes them incrementally, so the encoder (data.py) can make
two cheap passes over the text (its characters, then its ids) with a little more memory than
the ids themselves. ASCII blocks are passed on as bytes, undecoded (the common, fast case).

What the text of a source is:
- a UTF-8 byte-order mark at the start of a file is not a character of the text: it is dropped;
- a folder gives its files in sorted order (hidden files and folders skipped), a pattern such as
  `src/**/*.py` the files it matches in sorted order; in both, a newline is put after a file
  that does not end in one, so that one file's last line does not run into the next file;
- `-` is stdin, read once and kept in memory (it cannot be read twice).

No torch here: `read_text` also serves the command line (prime files, texts to score).
"""

from __future__ import annotations

import codecs
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from charrnn.errors import DataError

BLOCK = 1 << 18  # bytes read and decoded at a time
TRAINING_ADVICE = "convert it to UTF-8, or set data.encoding_errors: replace"
GLOB_CHARS = frozenset("*?[")


@dataclass
class Source:
    """A text to read: its files (or stdin's bytes) and whether files are joined by newlines."""

    name: str                       # what messages call it
    files: list[Path]
    stdin: Optional[bytes] = None   # the bytes of stdin, when the source is `-`
    joined: bool = False            # several files: each ends with a newline in the text

    @property
    def single_file(self) -> Optional[Path]:
        """The one file of the source, or None (a folder, a pattern or stdin)."""
        return self.files[0] if self.stdin is None and not self.joined else None

    def stamp(self) -> list[tuple[int, ...]]:
        """(size, mtime, inode, ctime) of every file: a source that changes while it is read is
        an error (a file replaced with its size and mtime kept has a new inode or ctime)."""
        try:
            return [(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                    for st in (f.stat() for f in self.files)]
        except OSError as exc:
            raise DataError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def has_glob(path: str) -> bool:
    return bool(GLOB_CHARS & set(path))


def _folder_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"folder {path} holds no files to read")
    return files


def _pattern_files(pattern: str) -> list[Path]:
    files = sorted(Path(f) for f in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(f))
    if not files:
        raise DataError(f"the pattern {pattern!r} matches no files (check it with ls; `**` "
                        f"matches any depth of folders, e.g. 'src/**/*.py')")
    return files


def open_source(path: str) -> Source:
    """The files behind `path`: a file, a folder, a glob pattern, or `-` for stdin."""
    if path == "-":
        return Source("<stdin>", [], stdin=sys.stdin.buffer.read())
    p = Path(path).expanduser()
    if p.is_dir():
        return Source(str(path), _folder_files(p), joined=True)
    if p.exists():
        return Source(str(path), [p])
    if has_glob(path):
        return Source(str(path), _pattern_files(path), joined=True)
    raise DataError(f"data path not found: {path} (give a text file, a folder, a quoted "
                    f"pattern such as 'books/*.txt', or - for stdin)")


def stdin_is_empty() -> bool:
    """Whether nothing is piped to stdin: a terminal (not read, it would wait for typing), no
    stdin at all, or a pipe at its end. Nothing is consumed."""
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        return True
    peek = getattr(stdin.buffer, "peek", None)
    return peek is not None and not peek(1)


def _blocks(source: Source) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(name, its blocks of bytes) for each part of the source."""
    if source.stdin is not None:
        data = source.stdin
        yield "<stdin>", (data[i:i + BLOCK] for i in range(0, len(data), BLOCK))
        return
    for f in source.files:
        yield str(f), _file_blocks(f)


def _file_blocks(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as fh:
            while block := fh.read(BLOCK):
                yield block
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename or path}: {exc.strerror}") from exc


def _decode_error(name: str, exc: UnicodeDecodeError, offset: int, advice: str) -> DataError:
    return DataError(f"{name} is not UTF-8 text: invalid byte 0x{exc.object[exc.start]:02x} at "
                     f"byte offset {offset + exc.start} ({advice})")


def pieces(source: Source, errors: str = "strict",
           advice: str = TRAINING_ADVICE) -> Iterator[bytes | str]:
    """The text of `source` in pieces: ASCII blocks as bytes, others decoded to str.

    `advice` ends the message of a decode error (what the user can do about it)."""
    for name, blocks in _blocks(source):
        decoder = codecs.getincrementaldecoder("utf-8")(errors)
        offset, last = 0, b""  # bytes of this part read so far; its last byte
        for block in blocks:
            if offset == 0 and block.startswith(codecs.BOM_UTF8):
                block, offset = block[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            pending = len(decoder.getstate()[0])
            if not pending and block.isascii():
                piece = block
            else:
                try:
                    piece = decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise _decode_error(name, exc, offset - pending, advice) from None
            offset += len(block)
            last = block[-1:] or last
            if piece:
                yield piece
        pending = len(decoder.getstate()[0])
        try:
            tail = decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _decode_error(name, exc, offset - pending, advice) from None
        if tail:
            yield tail
        if source.joined and last and last != b"\n":
            yield b"\n"


def read_text(path: str) -> str:
    """A file, folder, pattern or stdin (`-`) as UTF-8 text (a text to score or prime, not to
    train on: the advice on a decode error names no training setting)."""
    return "".join(p if isinstance(p, str) else p.decode("ascii")
                   for p in pieces(open_source(path), advice="convert it to UTF-8"))
