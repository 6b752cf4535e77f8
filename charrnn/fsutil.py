"""File-system helpers: the one way charrnn writes a file so that a crash never leaves half of it.

    with atomic_write(run_dir / "last.pt") as fh:
        torch.save(state, fh)

The data goes to a hidden temporary file beside the target (`.NAME.tmp-PID`), is flushed and
fsynced, then renamed over the target, and the folder is fsynced so that the rename survives a
power cut. On any way out before the rename (an exception, Ctrl-C, SystemExit), the temporary
file is removed, so nothing is left behind and the old file is intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Iterator

TEMP_GLOB = ".*.tmp-*"


def temp_path(path: Path) -> Path:
    """The temporary name `atomic_write` uses for `path` in this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (not possible, and not needed, on some systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, encoding: str | None = None,
                 durable: bool = True) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces `path` in one rename.

    `durable=False` skips the fsyncs, for files that can be rebuilt (a cache): the rename still
    makes the write all-or-nothing for readers.
    """
    path = Path(path)
    if not path.name or path.is_dir():  # `--out ''` or a folder: no file can take its place
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    tmp = temp_path(path)
    try:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename == str(tmp):  # name the file asked for
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text` (UTF-8) in one rename."""
    with atomic_write(path, "w", durable=durable) as fh:
        fh.write(text)
