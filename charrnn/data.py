"""Corpus in, batches out: read a file / folder / stdin, encode it whole, split, and batch.

Text is read as bytes and encoded in one pass. ASCII corpora (the common case) take a fast
path: a 256-entry byte table (`bytes.translate`) gives the ids directly, so a 100 MB file never
exists as a Python string. Other text is decoded as UTF-8 and encoded by `Vocab.encode`.
Single files of 1 MB or more are cached on disk (ids + vocab) and memory-mapped on the next
load, so a second run over a large corpus starts in about a second with ~1 byte per character.

Batches for truncated backprop-through-time: the ids are cut into `batch_size` contiguous
streams, and step k of a pass reads window k of every stream; targets are the inputs shifted
by one character. The model's hidden state is carried from window to window.

    ids:      a b c d e f g h i j k l m n o p q r s t u v w x (y)
    stream 0: a b c d e f | g h i j k l      window 0 = [a..c], [m..o]
    stream 1: m n o p q r | s t u v w x      window 1 = [d..f], [p..r]  ... (seq_len 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from charrnn.errors import DataError
from charrnn.fsutil import atomic_write, write_text_atomic
from charrnn.vocab import Vocab

CACHE_MIN_BYTES = 1 << 20  # smaller files load faster than a cache lookup would save
CACHE_FORMAT = 1
MIN_EVAL_STREAM = 1024  # characters per evaluation stream, so few start from an empty state


@dataclass
class Corpus:
    """An encoded text: its vocab, all ids, and the train / validation views of them."""

    vocab: Vocab
    ids: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    source: str
    cached: bool = False


# ---------------------------------------------------------------------------- reading

def _corpus_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(path).parts))
    if not files:
        raise DataError(f"folder {path} holds no files to read")
    return files


def read_bytes(path: str) -> tuple[bytearray, list[tuple[str, int]]]:
    """Raw bytes of a file, of a folder's files in sorted order, or of stdin (`-`).

    Also returns (name, size) for each part, so decode errors can name the file.
    """
    if path == "-":
        data = bytearray(sys.stdin.buffer.read())
        return data, [("<stdin>", len(data))]
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path not found: {path} (give a text file, a folder, or - for "
                        f"stdin)")
    files = _corpus_files(p) if p.is_dir() else [p]
    sizes = [f.stat().st_size for f in files]
    data = bytearray(sum(sizes))
    view, pos = memoryview(data), 0
    try:
        for f, size in zip(files, sizes):
            with open(f, "rb") as fh:
                got = fh.readinto(view[pos:pos + size])
            if got != size:
                raise DataError(f"{f}: changed while being read")
            pos += size
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename or path}: {exc.strerror}") from exc
    finally:
        view.release()
    return data, [(str(f), s) for f, s in zip(files, sizes)]


def _locate(offset: int, parts: list[tuple[str, int]]) -> tuple[str, int]:
    for name, size in parts:
        if offset < size:
            return name, offset
        offset -= size
    return parts[-1][0], offset


TRAINING_ADVICE = "convert it to UTF-8, or set data.encoding_errors: replace"


def decode_utf8(raw: bytearray, parts: list[tuple[str, int]], errors: str = "strict",
                advice: str = TRAINING_ADVICE) -> str:
    """UTF-8 text of `raw`; an invalid byte is a DataError naming its file and byte offset."""
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        name, offset = _locate(exc.start, parts)
        raise DataError(f"{name} is not UTF-8 text: invalid byte 0x{raw[exc.start]:02x} at "
                        f"byte offset {offset} ({advice})") from None


def read_text(path: str) -> str:
    """A file, folder or stdin (`-`) as UTF-8 text (a text to score or prime, not to train on)."""
    return decode_utf8(*read_bytes(path), advice="convert it to UTF-8")


def encode_bytes(raw: bytearray, parts: list[tuple[str, int]],
                 errors: str = "strict") -> tuple[Vocab, torch.Tensor]:
    """Vocab and ids of UTF-8 bytes, without a Python object per character."""
    if not raw:
        raise DataError(f"{parts[0][0] if len(parts) == 1 else 'corpus'} is empty: "
                        f"give a text with at least a few hundred characters")
    if raw.isascii():
        counts = torch.bincount(torch.frombuffer(raw, dtype=torch.uint8), minlength=128)
        present = counts.nonzero().flatten().tolist()
        vocab = Vocab([chr(b) for b in present])
        table = bytearray(256)
        for i, b in enumerate(present):
            table[b] = i
        ids = raw.translate(table)
        del raw
        return vocab, torch.frombuffer(ids, dtype=torch.uint8)
    text = decode_utf8(raw, parts, errors)
    del raw
    vocab = Vocab.from_text(text)
    return vocab, vocab.encode(text)


# ---------------------------------------------------------------------------- caching

def cache_dir() -> Path:
    """Where encoded corpora are cached: $CHARRNN_CACHE_DIR, else ~/.cache/charrnn."""
    env = os.environ.get("CHARRNN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn"


def _cache_key(path: Path, errors: str) -> str:
    st = path.stat()
    ident = f"{CACHE_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{errors}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _load_cached(base: Path) -> tuple[Vocab, torch.Tensor] | None:
    meta_path, ids_path = base.with_suffix(".json"), base.with_suffix(".ids")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = getattr(torch, meta["dtype"])
        if ids_path.stat().st_size != meta["length"] * dtype.itemsize or not meta["length"]:
            return None
        ids = torch.from_file(str(ids_path), shared=True, size=meta["length"], dtype=dtype)
        return Vocab(meta["vocab"]), ids
    except (OSError, ValueError, KeyError, AttributeError, RuntimeError, DataError):
        return None


def _store_cached(base: Path, vocab: Vocab, ids: torch.Tensor) -> None:
    """Write ids, then vocab, each in one rename; a cache that cannot be written is skipped."""
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(base.with_suffix(".ids"), durable=False) as fh:
            fh.truncate(len(ids) * ids.element_size())
            fh.flush()
            # a shared memory map of the new file: copy_ writes the ids straight into it
            torch.from_file(fh.name, shared=True, size=len(ids), dtype=ids.dtype).copy_(ids)
        meta = {"vocab": vocab.chars, "dtype": str(ids.dtype).removeprefix("torch."),
                "length": len(ids)}
        write_text_atomic(base.with_suffix(".json"), json.dumps(meta), durable=False)
    except (OSError, RuntimeError):
        pass


# ---------------------------------------------------------------------------- corpus

def load_corpus(path: str, val_fraction: float = 0.1, errors: str = "strict",
                use_cache: bool = True) -> Corpus:
    """Read, encode and split a corpus; large single files go through the on-disk cache."""
    p = Path(path) if path != "-" else None
    cacheable = (use_cache and p is not None and p.is_file()
                 and p.stat().st_size >= CACHE_MIN_BYTES)
    loaded, cached = None, False
    if cacheable:
        base = cache_dir() / _cache_key(p, errors)
        loaded = _load_cached(base)
        cached = loaded is not None
    if loaded is None:
        raw, parts = read_bytes(path)
        loaded = encode_bytes(raw, parts, errors)
        del raw
        if cacheable:
            _store_cached(base, *loaded)
    vocab, ids = loaded
    train, val = split(ids, val_fraction)
    return Corpus(vocab, ids, train, val, "<stdin>" if path == "-" else str(path), cached)


def load_training_corpus(cfg) -> Corpus:
    """The corpus a config names (a path, or a known corpus fetched by `charrnn data get`).

    Used by training and by `charrnn eval`, which rebuilds the validation split from it.
    """
    path = cfg.data.path
    if cfg.data.corpus:
        from charrnn.corpora import corpus_path
        path = str(corpus_path(cfg.data.corpus))
    if not path:
        raise DataError("no training text: set data.path in the config, or pass --data PATH "
                        "(- for stdin)")
    corpus = load_corpus(path, cfg.data.val_fraction, cfg.data.encoding_errors)
    if cfg.data.val_fraction > 0 and len(corpus.val) < 2:
        raise DataError(f"the validation split of {corpus.source} is only {len(corpus.val)} "
                        f"character(s): raise data.val_fraction, use a longer text, or set "
                        f"data.val_fraction: 0")
    return corpus


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_fraction` of the ids is the validation split (views, no copy)."""
    n_val = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


# ---------------------------------------------------------------------------- batching

class StreamBatcher:
    """Contiguous streams for truncated BPTT; window `step` of a pass is a pure function of step.

    Because a batch depends on the step alone, a resumed run reads exactly the windows that an
    uninterrupted run would have read.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int):
        need = batch_size * seq_len + 1
        if len(ids) < need:
            raise DataError(
                f"the training text has {len(ids):,} characters, but one training window needs "
                f"batch_size x seq_len + 1 = {need:,}: use a longer text, or lower "
                f"train.batch_size / train.seq_len (or data.val_fraction)")
        per_stream = (len(ids) - 1) // batch_size
        self.batch_size, self.seq_len = batch_size, seq_len
        self.windows_per_pass = per_stream // seq_len
        span = self.windows_per_pass * seq_len
        rows = ids[: batch_size * per_stream + 1]
        # (B, per_stream) views; targets are the same text shifted by one character
        self.inputs = rows[:-1].view(batch_size, per_stream)[:, :span]
        self.targets = rows[1:].view(batch_size, per_stream)[:, :span]

    def position(self, step: int) -> tuple[int, int]:
        """(pass, window) read at `step`."""
        return divmod(step, self.windows_per_pass)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets (B, T) as int64, and whether the hidden state must be reset."""
        _, window = self.position(step)
        cols = slice(window * self.seq_len, (window + 1) * self.seq_len)
        return self.inputs[:, cols].long(), self.targets[:, cols].long(), window == 0


def eval_windows(ids: torch.Tensor, streams: int, seq_len: int, max_windows: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Cover a whole text with parallel streams, window by window: (inputs, targets, valid).

    Every character but the first is a target exactly once. The last stream is padded at its
    end; `valid` masks the padding out (None when a window has none). Each stream starts from an
    empty hidden state, so streams are kept at least MIN_EVAL_STREAM characters long.
    """
    n = len(ids) - 1  # characters to predict
    if n < 1:
        return
    streams = max(1, min(streams, n // MIN_EVAL_STREAM))
    per_stream = -(-n // streams)
    pad = streams * per_stream - n
    padded = torch.cat([ids, ids.new_zeros(pad)]) if pad else ids
    inputs = padded[:-1].view(streams, per_stream)
    targets = padded[1:].view(streams, per_stream)
    for k, start in enumerate(range(0, per_stream, seq_len)):
        if max_windows is not None and k >= max_windows:
            return
        cols = slice(start, start + seq_len)
        x, y = inputs[:, cols].long(), targets[:, cols].long()
        valid = None
        if pad and start + x.size(1) > per_stream - pad:
            positions = torch.arange(start, start + x.size(1))
            valid = torch.ones_like(y, dtype=torch.bool)
            valid[-1] = positions < per_stream - pad
        yield x, y, valid
