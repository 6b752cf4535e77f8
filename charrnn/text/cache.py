"""The on-disk cache of encoded corpora: where entries live, when one may be used, and its bound.

An entry is two files named by a key: `KEY.ids` (the ids, memory-mapped when used) and
`KEY.json` (vocab, dtype, length, and the source file it was made from). The key hashes the
source's resolved path, device, inode, size, mtime and ctime, and the decode policy: replacing a
file (a rename, `cp -p`, `rsync -t`, `os.utime`) changes its inode or its ctime, which no user
can set back, so a changed file never finds the old entry. One more check closes the last gap,
a file changed within the same tick of the file-system clock as the entry was written (git's
"racily clean" case): an entry is used only if its source's ctime is older than its vocab file.

The cache is bounded: CHARRNN_CACHE_MAX_MB (default DEFAULT_MAX_MB; 0 turns the cache off).
Before an entry is written, the least recently used ones are removed until it fits; an entry
larger than the bound is not cached at all. Using an entry touches its ids file, whose mtime is
thus its last use. `charrnn data cache` lists the entries, `--clear` removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from charrnn.errors import DataError
from charrnn.fsutil import TEMP_GLOB

if TYPE_CHECKING:  # torch is imported where an entry is read: listing the cache needs none
    import torch

    from charrnn.text.vocab import Vocab

FORMAT = 3
DEFAULT_MAX_MB = 2048
MAX_MB_ENV = "CHARRNN_CACHE_MAX_MB"


def cache_dir() -> Path:
    """Where encoded corpora are cached: $CHARRNN_CACHE_DIR, else ~/.cache/charrnn."""
    env = os.environ.get("CHARRNN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn"


def max_bytes() -> int:
    """The cache's bound in bytes, from $CHARRNN_CACHE_MAX_MB (MB of 10^6 bytes)."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB * 1_000_000
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0 or mb == float("inf"):
        raise DataError(f"{MAX_MB_ENV}={raw!r} is not a size in MB: give a number >= 0 (0 turns "
                        f"the corpus cache off; default {DEFAULT_MAX_MB})")
    return int(mb * 1_000_000)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


@dataclass
class Entry:
    """A cache entry as `charrnn data cache` shows it."""

    key: str
    bytes: int                 # on disk, both files
    last_used: float           # seconds since the epoch
    source: Optional[str]      # the file it was made from (None: unknown, incomplete entry)
    chars: Optional[int]
    status: str                # "current", "stale" (the source changed or is gone), "incomplete"

    def files(self, folder: Path) -> list[Path]:
        return [folder / f"{self.key}.ids", folder / f"{self.key}.json"]


class Slot:
    """The entry for one source file and decode policy: look it up, or write it."""

    def __init__(self, path: Path, errors: str, folder: Path | None = None):
        self.source = path.resolve()
        self.errors = errors
        self.stat = _identity(path.stat())
        ident = f"{FORMAT}|{self.source}|{'|'.join(map(str, self.stat))}|{errors}"
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:24]
        self.folder = folder or cache_dir()
        self.ids_path = self.folder / f"{self.key}.ids"
        self.meta_path = self.folder / f"{self.key}.json"

    def load(self) -> tuple[Vocab, torch.Tensor] | None:
        """The entry's vocab and memory-mapped ids, or None (no entry, or one not to trust)."""
        import torch

        from charrnn.text.vocab import Vocab
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            written = self.meta_path.stat().st_mtime_ns
            if meta.get("format") != FORMAT or meta.get("stat") != self.stat:
                return None
            if self.stat[4] >= written:  # changed in the tick the entry was written: re-read
                return None
            dtype = getattr(torch, meta["dtype"])
            length = meta["length"]
            if not length or self.ids_path.stat().st_size != length * dtype.itemsize:
                return None
            ids = torch.from_file(str(self.ids_path), shared=True, size=length, dtype=dtype)
            vocab = Vocab(meta["vocab"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError,
                DataError):
            return None
        with contextlib.suppress(OSError):
            os.utime(self.ids_path)  # its last use, for the eviction order
        return vocab, ids

    def reserve(self, size: int) -> bool:
        """Make room for an entry of `size` bytes (evicting the least recently used ones);
        False when the cache is off or smaller than the entry."""
        limit = max_bytes()
        if size > limit:
            return False
        entries = list_entries(self.folder)
        total = sum(e.bytes for e in entries)
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total + size <= limit:
                break
            total -= remove(entry, self.folder)
        return True

    def meta(self, vocab: "Vocab", length: int) -> dict:
        return {"format": FORMAT, "vocab": vocab.chars,
                "dtype": str(vocab.dtype).removeprefix("torch."), "length": length,
                "source": str(self.source), "stat": self.stat, "errors": self.errors,
                "created": time.time()}


def list_entries(folder: Path | None = None) -> list[Entry]:
    """Every entry in the cache folder, complete or not (a crash can leave one file alone)."""
    folder = folder or cache_dir()
    keys: dict[str, list[Path]] = {}
    try:
        for p in folder.iterdir():
            if p.suffix in (".ids", ".json") and not p.name.startswith("."):
                keys.setdefault(p.stem, []).append(p)
    except OSError:
        return []
    entries = []
    for key, files in keys.items():
        stats = {}
        for p in files:
            with contextlib.suppress(OSError):
                stats[p.suffix] = p.stat()
        if not stats:
            continue
        entries.append(_entry(folder, key, stats))
    return entries


def _entry(folder: Path, key: str, stats: dict) -> Entry:
    size = sum(st.st_size for st in stats.values())
    last_used = (stats.get(".ids") or stats[".json"]).st_mtime
    meta = None
    if ".ids" in stats and ".json" in stats:
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        return Entry(key, size, last_used, None, None, "incomplete")
    source = meta.get("source")
    status = "stale"
    if source and meta.get("format") == FORMAT:
        with contextlib.suppress(OSError):
            if _identity(Path(source).stat()) == meta.get("stat"):
                status = "current"
    return Entry(key, size, last_used, source, meta.get("length"), status)


def remove(entry: Entry, folder: Path) -> int:
    """Delete an entry's files (a process that maps its ids keeps them until it ends);
    returns the bytes freed."""
    freed = 0
    for p in entry.files(folder):
        with contextlib.suppress(OSError):
            size = p.stat().st_size
            p.unlink()
            freed += size
    return freed


def clear(folder: Path | None = None) -> tuple[int, int]:
    """Remove every entry, and temporary files that a killed process left; (entries, bytes)."""
    folder = folder or cache_dir()
    entries = list_entries(folder)
    freed = sum(remove(e, folder) for e in entries)
    with contextlib.suppress(OSError):
        for tmp in folder.glob(TEMP_GLOB):
            pid = tmp.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    freed += tmp.stat().st_size
                    tmp.unlink()
    return len(entries), freed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
