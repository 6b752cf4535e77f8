"""The run directory: one writer at a time, no run overwritten by accident, and its metrics log.

    runs/NAME/config.yaml     the resolved config
              metrics.jsonl   one JSON object per logged step and per evaluation
              last.pt         the latest checkpoint (resume from it)
              best.pt         the checkpoint with the lowest validation loss
              samples.jsonl   the previews written while training
              tensorboard/    the metrics as TensorBoard events (with train.log_to: [tensorboard])
              train.lock      held (flock) by the process training into the folder; holds its PID

`RUN_FILES` lists the files that make a run: `--force` clears them together, and a run branched
into a new folder starts with its source's logs up to the branch point and its best checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from charrnn.errors import MissingDependency, RunDirError
from charrnn.fsutil import atomic_write, write_text_atomic

LOCK_NAME = "train.lock"
CHECKPOINT_NAMES = ("last.pt", "best.pt")
METRICS_NAME, SAMPLES_NAME = "metrics.jsonl", "samples.jsonl"
LOG_NAMES = (METRICS_NAME, SAMPLES_NAME)  # one JSON record per line, each with its "step"
RUN_FILES = ("config.yaml", *CHECKPOINT_NAMES, *LOG_NAMES)
TENSORBOARD_DIR = "tensorboard"
# metrics.jsonl's numbers as TensorBoard tags: the losses of a step and of an evaluation share
# one chart (loss/train, loss/val); the wall-clock `time` is TensorBoard's own
BOARD_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpc": "bpc/val",
              "lr": "lr", "chars_per_sec": "chars_per_sec"}

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class RunLock:
    """An exclusive lock on a run directory, released when the process ends, even by SIGKILL.

    The lock is an `flock` on `train.lock`, which also records the holder's PID for the error
    message; a lock file left by a dead process holds no flock and is simply taken over. The
    holder removes the file when it is done, so a process that opened the file before then may
    lock a file that is no longer in the folder: the lock counts only while the locked file is
    still the one at the path, and is taken again otherwise.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise RunDirError(f"{self.path.parent} is in use: process {holder} is "
                                      f"training into it; wait for it to finish or choose "
                                      f"another --out")
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder had already removed: try the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        remove_stale_temp_files(self.path.parent)
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete half-written checkpoints (`.last.pt.tmp-PID`) left by a process that was killed.

    Called with the run's lock held, so no live writer owns them.
    """
    for tmp in Path(run_dir).glob(".*.pt.tmp-*"):
        tmp.unlink(missing_ok=True)


def make_run_dir(run_dir: Path) -> None:
    """Create the run directory; one that cannot be made or written to is bad input."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the run directory {run_dir}: "
                          f"{exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write into the run directory {run_dir}: permission denied")


def same_dir(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def check_out_dir(out: Path, data_path: str | None) -> None:
    """Refuse a run directory that is the current folder, or the folder of the training text
    (whose next read would take the checkpoints for text)."""
    if same_dir(out, Path.cwd()):
        raise RunDirError(f"--out {str(out)!r} is the current folder: give the run a folder of "
                          f"its own, e.g. --out runs/NAME")
    if not data_path or data_path == "-":
        return
    data = Path(data_path).resolve()
    folder = data if data.is_dir() else data.parent
    target = Path(out).resolve()
    if target == folder or (data.is_dir() and folder in target.parents):
        raise RunDirError(f"--out {out} is the folder of the training text {data_path}: give "
                          f"the run a folder of its own, e.g. --out runs/NAME")


@contextlib.contextmanager
def run_dir_made(run_dir: Path) -> Iterator[None]:
    """`make_run_dir`, undone when what follows fails before writing into it: a refused run
    leaves no folder behind (one it did not create, or that holds files, is kept)."""
    created = not Path(run_dir).exists()
    make_run_dir(run_dir)
    try:
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                Path(run_dir).rmdir()
        raise


def existing_checkpoints(run_dir: Path) -> list[str]:
    return [name for name in CHECKPOINT_NAMES if (Path(run_dir) / name).exists()]


def check_new_run(run_dir: Path, force: bool) -> None:
    """Refuse to start a fresh run over one that already has checkpoints, unless forced."""
    found = existing_checkpoints(run_dir)
    if found and not force:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(found)}): continue it with "
                          f"--resume {run_dir}, choose another --out, or start over with --force")


def clear_run(run_dir: Path) -> None:
    """Remove every file of an old run before starting over (`--force`)."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / TENSORBOARD_DIR, ignore_errors=True)


def start_branch(run_dir: Path, source: Path, step: int, best: Path | None) -> None:
    """Begin a run branched from checkpoint `source` (of another folder) at `step`: with the
    logs of the source's folder up to that step, and `best` (the checkpoint holding the best
    validation loss as of then, if any) as its best.pt."""
    for name in LOG_NAMES:
        if (Path(source).parent / name).is_file():
            _copy_up_to(Path(source).parent / name, Path(run_dir) / name, step)
    if best is not None:
        with open(best, "rb") as src, atomic_write(Path(run_dir) / "best.pt") as dst:
            shutil.copyfileobj(src, dst)


def check_log_to(log_to: list[str]) -> None:
    """Refuse, before a run starts, a `train.log_to` that names a library not installed."""
    if "tensorboard" in log_to:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
        except ImportError:
            raise MissingDependency("train.log_to names tensorboard, which is not installed; "
                                    "install it with: pip install 'charrnn[tensorboard]'") from None


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, records past the resumed step are dropped.

    With "tensorboard" in `log_to`, each record's numbers also go to TensorBoard event files in
    the run directory's tensorboard/ folder (BOARD_TAGS), where a resume drops those past the
    resumed step as well.
    """

    def __init__(self, path: Path, resume_step: int | None = None, log_to: list[str] = ()):
        self.path = Path(path)
        check_log_to(log_to)
        if resume_step is not None and self.path.exists():
            _copy_up_to(self.path, self.path, resume_step)
        self.fh = open(self.path, "a", encoding="utf-8")
        self.board = None
        if "tensorboard" in log_to:
            from torch.utils.tensorboard import SummaryWriter
            self.board = SummaryWriter(str(self.path.parent / TENSORBOARD_DIR),
                                       purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.board is not None:
            for key, tag in BOARD_TAGS.items():
                if key in record:
                    self.board.add_scalar(tag, record[key], record["step"])
            self.board.flush()

    def close(self) -> None:
        self.fh.close()
        if self.board is not None:
            self.board.close()


def _copy_up_to(src: Path, dst: Path, step: int) -> None:
    """Write to `dst` the records of log `src` up to `step` (`dst` may be `src`)."""
    kept = [line for line in Path(src).read_text(encoding="utf-8").splitlines()
            if line.strip() and _step_of(line) <= step]
    write_text_atomic(dst, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0
