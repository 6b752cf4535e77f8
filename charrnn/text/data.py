"""Corpus in, batches out: read a file / folder / pattern / stdin, encode, split, and batch.

Encoding takes two passes over the text, read piece by piece (source.py): the first finds
its characters and length, the second writes each piece's ids straight into a tensor allocated
once at its final size. Code points are handled by torch (bincount, then a lookup table), so
there is never a Python object per character, and loading needs little more memory than the
ids: 1 byte per character up to 256 symbols, 2 up to 32,768. Single files of 1 MB or more
are encoded into the on-disk cache (cache.py: ids + vocab, bounded, least recently used entries
evicted) and memory-mapped from it, so a second run over a large corpus starts in about a
second.

Batches for truncated backprop-through-time: the ids are cut into `batch_size` contiguous
streams, and step k of a pass reads window k of every stream; targets are the inputs shifted
by one character. The model's hidden state is carried from window to window.

    ids:      a b c d e f g h i j k l m n o p q r s t u v w x (y)
    stream 0: a b c d e f | g h i j k l      window 0 = [a..c], [m..o]
    stream 1: m n o p q r | s t u v w x      window 1 = [d..f], [p..r]  ... (seq_len 3)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from charrnn.text.cache import Slot, cache_dir, max_bytes  # noqa: F401
from charrnn.errors import DataError
from charrnn.fsutil import atomic_write, write_text_atomic
from charrnn.text.source import (Source, has_glob, open_source, pieces, read_text,  # noqa: F401
                                stdin_is_empty)
from charrnn.text.vocab import ENCODE_CHUNK, Vocab, code_points, lookup

CACHE_MIN_BYTES = 1 << 20  # smaller files load faster than a cache lookup would save
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


# ---------------------------------------------------------------------------- encoding

def _scan(source: Source, errors: str) -> tuple[Vocab, torch.Tensor, int]:
    """First pass: the vocab, a code point -> id table, and the length in characters."""
    present = torch.zeros(0x110000, dtype=torch.bool)
    length = 0
    for piece in pieces(source, errors):
        points = code_points(piece)
        counts = torch.bincount(points)
        present[:len(counts)] |= counts > 0
        length += len(points)
    if not length:
        raise DataError(f"{source.name} is empty: give a text with at least a few hundred "
                        f"characters")
    vocab = Vocab([chr(c) for c in present.nonzero().flatten().tolist()])
    return vocab, vocab.table, length


def _fill(source: Source, errors: str, table: torch.Tensor, ids: torch.Tensor,
          stamp: list) -> None:
    """Second pass: write the ids of each piece into its slice of `ids`."""
    pos = 0
    try:
        for piece in pieces(source, errors):
            if pos + len(piece) > len(ids):  # (bytes: ASCII, as many characters)
                pos = -1
                break
            pos += lookup(table, piece, ids[pos:])
    except (IndexError, RuntimeError):  # a character the first pass did not see
        pos = -1
    if pos != len(ids) or source.stamp() != stamp:
        raise DataError(f"{source.name} changed while being read: load it again")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Per-piece ops are small and memory-bound: one thread runs them as fast, and never
    waits for a busy core (with two threads on a loaded machine, loading was 5x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_source(source: Source, errors: str = "strict",
                  cache: Slot | None = None) -> tuple[Vocab, torch.Tensor]:
    """Vocab and ids of a source; with `cache`, the ids are written into that cache entry."""
    with _one_thread():
        return _encode(source, errors, cache)


def _encode(source: Source, errors: str, cache: Slot | None) -> tuple[Vocab, torch.Tensor]:
    stamp = source.stamp()
    vocab, table, length = _scan(source, errors)
    if cache is not None and cache.reserve(length * vocab.dtype.itemsize):
        try:
            return vocab, _encode_into_cache(source, errors, table, length, vocab, cache, stamp)
        except (OSError, RuntimeError):
            pass  # no cache then: encode in memory
    ids = torch.empty(length, dtype=vocab.dtype)
    _fill(source, errors, table, ids, stamp)
    return vocab, ids


# ---------------------------------------------------------------------------- caching

def _encode_into_cache(source: Source, errors: str, table: torch.Tensor, length: int,
                       vocab: Vocab, slot: Slot, stamp: list) -> torch.Tensor:
    """Encode into a new cache entry (cache.py), memory-mapped: its ids are the only copy in
    memory.

    The ids file is written through `atomic_write` (renamed into place once complete), then
    its vocab; an entry without its vocab file is simply not found.
    """
    slot.folder.mkdir(parents=True, exist_ok=True)
    size = length * vocab.dtype.itemsize
    with atomic_write(slot.ids_path, durable=False) as fh:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fh.fileno(), 0, size)  # a full disk fails here, not in the map
        else:  # pragma: no cover - not Linux
            fh.truncate(size)
        fh.flush()
        ids = torch.from_file(fh.name, shared=True, size=length, dtype=vocab.dtype)
        _fill(source, errors, table, ids, stamp)
    write_text_atomic(slot.meta_path, json.dumps(slot.meta(vocab, length)), durable=False)
    return ids


# ---------------------------------------------------------------------------- corpus

def load_corpus(path: str, val_fraction: float = 0.1, errors: str = "strict",
                use_cache: bool = True) -> Corpus:
    """Read, encode and split a corpus; large single files go through the on-disk cache."""
    source = open_source(path)
    single = source.single_file
    slot = None
    if (use_cache and single is not None and single.stat().st_size >= CACHE_MIN_BYTES
            and max_bytes() > 0):  # (0: the cache is off)
        slot = Slot(single, errors)
        loaded = slot.load()
        if loaded is not None:
            return _corpus(*loaded, val_fraction, source.name, cached=True)
    return _corpus(*encode_source(source, errors, slot), val_fraction, source.name)


def _corpus(vocab: Vocab, ids: torch.Tensor, val_fraction: float, name: str,
            cached: bool = False) -> Corpus:
    train, val = split(ids, val_fraction)
    return Corpus(vocab, ids, train, val, name, cached)


def load_training_corpus(cfg, missing: str = "if the text has moved, pass --data with its "
                                              "new place", piped_before: bool = False) -> Corpus:
    """The corpus a config names (a path, or a known corpus fetched by `charrnn data get`).

    Used by training and by `charrnn eval`, which rebuilds the validation split from it.
    `missing` says what to do when the text of a saved run is no longer where it was;
    `piped_before`: the saved run being continued was trained on stdin, which must bring the
    same text again.
    """
    path = cfg.data.path
    if cfg.data.corpus and path:
        raise DataError(f"data.corpus ({cfg.data.corpus}) and data.path ({path}) are both set: "
                        f"keep one of them")
    if cfg.data.corpus:
        from charrnn.text.corpora import corpus_path
        path = str(corpus_path(cfg.data.corpus))
    if not path:
        raise DataError("no training text: set data.path in the config, or pass --data PATH "
                        "(- for stdin)")
    if path == "-" and piped_before and stdin_is_empty():
        raise DataError("this run was trained on text piped to stdin, and nothing is piped in "
                        "now: pipe the same text in again (charrnn train --resume RUN < TEXT), "
                        "or give it as a file with --data TEXT")
    if path != "-" and not has_glob(path) and not Path(path).exists():
        raise DataError(f"data path not found: {path} ({missing})")
    corpus = load_corpus(path, cfg.data.val_fraction, cfg.data.encoding_errors)
    if cfg.data.val_fraction > 0 and len(corpus.val) < 2:
        if len(corpus.ids) < cfg.train.batch_size * cfg.train.seq_len + 1:
            raise too_short_for_a_window(corpus.source, len(corpus.ids), cfg.train.batch_size,
                                         cfg.train.seq_len)  # the limit no val_fraction lifts
        raise DataError(f"the validation split of {corpus.source} is only {len(corpus.val)} "
                        f"character(s): raise data.val_fraction, use a longer text, or set "
                        f"data.val_fraction: 0")
    return corpus


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_fraction` of the ids is the validation split (views, no copy)."""
    n_val = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


# ---------------------------------------------------------------------------- batching

def too_short_for_a_window(text: str, length: int, batch_size: int, seq_len: int,
                           also: str = "") -> DataError:
    """The error for a text shorter than one training window (`also`: one more remedy)."""
    return DataError(f"{text} has {length:,} characters, but one training window needs "
                     f"batch_size x seq_len + 1 = {batch_size * seq_len + 1:,}: use a longer "
                     f"text, or lower train.batch_size / train.seq_len{also}")


class StreamBatcher:
    """Contiguous streams for truncated BPTT; window `step` of a pass is a pure function of step.

    Because a batch depends on the step alone, a resumed run reads exactly the windows that an
    uninterrupted run would have read.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int):
        if len(ids) < batch_size * seq_len + 1:
            raise too_short_for_a_window("the training text", len(ids), batch_size, seq_len,
                                         " (or data.val_fraction)")
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
    empty hidden state, so streams are kept at least MIN_EVAL_STREAM characters long. The ids
    are read through views: only a window is ever copied, never the text.
    """
    n = len(ids) - 1  # characters to predict
    if n < 1:
        return
    streams = max(1, min(streams, n // MIN_EVAL_STREAM))
    per_stream = -(-n // streams)
    last = n - (streams - 1) * per_stream  # the last stream's characters to predict
    # (streams - 1, per_stream) views of the full streams; the last one is read on its own
    full = ids[:(streams - 1) * per_stream + 1]
    inputs = full[:-1].view(streams - 1, per_stream)
    targets = full[1:].view(streams - 1, per_stream)
    tail = ids[(streams - 1) * per_stream:]  # last + 1 ids
    for k, start in enumerate(range(0, per_stream, seq_len)):
        if max_windows is not None and k >= max_windows:
            return
        width = min(seq_len, per_stream - start)
        x = ids.new_zeros(streams, width, dtype=torch.long)
        y = ids.new_zeros(streams, width, dtype=torch.long)
        x[:-1], y[:-1] = inputs[:, start:start + width], targets[:, start:start + width]
        have = max(0, min(width, last - start))  # real characters of the last stream here
        x[-1, :have], y[-1, :have] = tail[start:start + have], tail[start + 1:start + 1 + have]
        valid = None
        if have < width:
            valid = torch.ones(streams, width, dtype=torch.bool, device=ids.device)
            valid[-1, have:] = False
        yield x, y, valid


def widen(corpus: Corpus, chars: list[str], val_fraction: float) -> Corpus:
    """`corpus` encoded to the vocab `chars` when that holds every character of it (a resumed
    fine-tuning run's vocab is wider than its text's); else `corpus` unchanged."""
    if corpus.vocab.chars == list(chars) or not set(corpus.vocab.chars) <= set(chars):
        return corpus
    return encode_to(corpus, Vocab(list(chars)), val_fraction)


def encode_to(corpus: Corpus, vocab: Vocab, val_fraction: float) -> Corpus:
    """The ids mapped to `vocab` piece by piece, into a buffer of its dtype (no int64 copy)."""
    table = torch.tensor([vocab.index[c] for c in corpus.vocab.chars]).to(vocab.dtype)
    ids = torch.empty(len(corpus.ids), dtype=vocab.dtype)
    for start in range(0, len(ids), ENCODE_CHUNK):
        piece = corpus.ids[start:start + ENCODE_CHUNK]
        torch.index_select(table, 0, piece.int(), out=ids[start:start + len(piece)])
    train, val = split(ids, val_fraction)
    return replace(corpus, vocab=vocab, ids=ids, train=train, val=val)
