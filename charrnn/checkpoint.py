"""Checkpoints: atomic writes, safe and versioned loads, and where to find them.

A checkpoint is a dict of plain Python values and tensors, so it loads with
`torch.load(..., weights_only=True)` and nothing else is ever unpickled. Its keys (besides the
first three, which `save_checkpoint` adds) are what charrnn.training.state.TrainState writes:

    format, format_version, charrnn_version, config (resolved, as a dict), vocab (list of chars),
    model, optimizer (state dicts), step, data_position, hidden (the carried state of every
    stream, fp32), best_val_loss, val_loss, train_loss, elapsed_seconds, rng (torch / cuda
    generator states of rank 0), rank_rng (those of every rank), world_size, scaler (fp16 loss
    scale), run_started (wall-clock time the run began; kept on resume), data (length and
    sha256 of the training text, and the window layout), train_window (the partial train-loss
    average), skipped_steps, schedule (a re-planned cosine, or None), stopped_by (why the run
    ended: max_steps, max_minutes or interrupt; None for a save during training)

An exported model (charrnn.export) keeps only config, vocab, model, step, best_val_loss,
val_loss and train_loss, and adds `kind` ("export"), `exported_from` (the source's path) and,
when its weights are quantized, `quantization` ({"mode": "int8" or "bf16"}).

Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed over
the old file, so a crash at any moment leaves either the old or the new checkpoint, never a
broken one.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from charrnn import __version__
from charrnn.config import without_removed
from charrnn.errors import CheckpointError, TrainingFailed
from charrnn.fsutil import atomic_write
from charrnn.quantize import dequantize_state

FORMAT = "charrnn-checkpoint"
FORMAT_VERSION = 2  # 2: the model may be quantized; a file that is not says 1, as before

# Upgrades from older formats, by the version they read: each returns the next version's dict.
_MIGRATIONS: dict[int, Callable[[dict], dict]] = {
    1: lambda state: {**state, "format_version": 2},  # 2 only adds `quantization`
}


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` atomically to `path` (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    # a charrnn that reads only format 1 would take int8 weights for fp32 ones: it must refuse
    version = FORMAT_VERSION if "quantization" in state else 1
    state = {"format": FORMAT, "format_version": version, "charrnn_version": __version__,
             **state}
    try:
        with atomic_write(path) as fh:  # removes its temporary file on any way out, Ctrl-C too
            _save(state, fh)
    except OSError as exc:
        kept = "; the previous checkpoint there is intact" if path.exists() else ""
        raise TrainingFailed(f"could not write checkpoint {path}: {exc.strerror or exc}"
                             f"{kept}") from exc


class _WriteErrors:
    """A file that remembers the OSError of a failed write: torch.save reports one (a full
    disk, a file-size limit) as a RuntimeError of its own that no longer says why."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _save(state: dict, fh) -> None:
    """torch.save into `fh`; a write that failed raises its own OSError."""
    recorder = _WriteErrors(fh)
    try:
        torch.save(state, recorder)
    except RuntimeError:
        if recorder.error is None:
            raise
        raise recorder.error from None


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file, or the `best.pt` / `last.pt` of a run directory (in `prefer` order)."""
    path = Path(path)
    if path.is_dir():
        order = ["best.pt", "last.pt"] if prefer == "best" else ["last.pt", "best.pt"]
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run directory {path} holds no checkpoint (no best.pt or last.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def find_default_checkpoint(runs_dir: str | Path = "runs") -> tuple[Path, str]:
    """$CHARRNN_CHECKPOINT, else the run under ./runs started most recently; also why.

    A run's start is the `run_started` time its checkpoints carry, kept when it is resumed, so
    continuing an old run does not make it the default; a checkpoint without one counts from
    its file's modification time.
    """
    env = os.environ.get("CHARRNN_CHECKPOINT")
    if env:
        try:
            return resolve_checkpoint(env), "$CHARRNN_CHECKPOINT"
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (from $CHARRNN_CHECKPOINT)") from None
    runs = {p.parent for name in ("best.pt", "last.pt") for p in Path(runs_dir).glob(f"**/{name}")}
    if not runs:
        raise CheckpointError(f"no checkpoint given and none found under ./{runs_dir} (train one "
                              f"with `charrnn train CONFIG`, or pass --checkpoint PATH)")
    newest = max(runs, key=lambda run: (_run_started(run), str(run)))
    return resolve_checkpoint(newest), f"the run started most recently under ./{runs_dir}"


def _run_started(run: Path) -> float:
    """When a run was started: its checkpoint's `run_started`, else the file's time."""
    path = resolve_checkpoint(run, prefer="last")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        started = state.get("run_started") if isinstance(state, dict) else None
        if isinstance(started, (int, float)):
            return float(started)
    except Exception:  # noqa: BLE001 - an unreadable run is still a candidate, by its file time
        pass
    return path.stat().st_mtime


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load and check a checkpoint without unpickling anything but tensors and plain data."""
    path = resolve_checkpoint(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file, not a charrnn checkpoint")
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles are not for users
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError,
            KeyError, IndexError) as exc:
        if head != _ZIP_MAGIC and not _holds_objects(path):
            raise CheckpointError(f"{path}: not a charrnn checkpoint (not a file written by "
                                  f"torch.save)") from None
        if head != _ZIP_MAGIC or ("weights only" in str(exc).lower()
                                  or "weights_only" in str(exc)):
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects beyond tensors and plain data "
                f"(a pickle that could run code), which a charrnn checkpoint never does") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                              ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a charrnn checkpoint (it has no charrnn format tag)")
    version = state.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer charrnn (format {version}; this "
                              f"charrnn {__version__} reads up to {FORMAT_VERSION}): upgrade "
                              f"charrnn to use it")
    while version < FORMAT_VERSION:
        state = _MIGRATIONS[version](state)
        version = state["format_version"]
    for key in ("config", "vocab", "model", "step"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint is missing '{key}'")
    dequantize_state(state, path)
    state["config"] = without_removed(state["config"])
    state["path"] = str(path)
    _check_family(state)
    return state


def _check_family(state: dict) -> None:
    """A checkpoint names its model family by registry name only; that family must be
    installed (built in, or a package's `charrnn.models` entry point) to use it."""
    from charrnn.models.registry import check_installed
    model = state["config"].get("model") if isinstance(state["config"], dict) else None
    check_installed(model.get("type") if isinstance(model, dict) else None, state["path"])


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_OBJECT_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX",
                   "BUILD"}


def _holds_objects(path: Path) -> bool:
    """Whether a file that is not a torch archive is a pickle naming Python objects.

    The opcodes are only read (pickletools), never run; a text or other file stops at its first
    byte that is not an opcode.
    """
    found = False
    try:
        with open(path, "rb") as fh:
            for op, _, _ in pickletools.genops(fh):
                found = found or op.name in _OBJECT_OPCODES
                if op.name == "STOP":  # a whole pickle, read to its end
                    return found
    except Exception:  # noqa: BLE001 - anything unparsable is simply not a pickle of objects
        pass
    return False


def require_resumable(state: dict) -> dict:
    """`state` itself, if it can continue a run; an exported model cannot (it has no optimizer)."""
    if state.get("kind") == "export":
        raise CheckpointError(f"{state['path']}: an exported model (weights only) cannot be "
                              f"resumed: resume from the run directory it came from, or start "
                              f"a new run")
    return state


def capture_rng(device: torch.device) -> dict:
    """Generator states needed for an exact resume (CPU always, CUDA where used)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict, device: torch.device) -> None:
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
