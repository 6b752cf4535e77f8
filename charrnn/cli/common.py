"""What the command modules share: common options, the reporter, and loading a model to use.

Imported by cli.py and by each command-group module; imports nothing heavy at module level
(torch loads inside `load_model`), so `charrnn --help` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from charrnn.api import run_config, train_config  # noqa: F401  (the commands import them here)
from charrnn.errors import CharRNNError, DataError

CHECKPOINT_OPTION = typer.Option(
    None, "--checkpoint", "-c", metavar="CKPT|RUN_DIR",
    help="Checkpoint file or run directory (its best.pt). Default: $CHARRNN_CHECKPOINT, else "
         "the best.pt of the run started most recently under ./runs.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")


def make_reporter(quiet: bool):
    from charrnn.report import Reporter
    return Reporter(quiet=quiet)


def decode_escapes(text: str, option: str) -> str:
    """`\\n`, `\\0` and other backslash escapes in an option value, other text kept as is."""
    if "\\" not in text:
        return text
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(f"'{text}' holds a broken backslash escape ({exc.reason}); "
                                 f"write a backslash itself as \\\\", param_hint=option) from None


@dataclass
class LoadedModel:
    """A model loaded through the Python API (`api`, a charrnn.api.Model), with what the
    commands say about it; its attributes (model, vocab, device, path, step, ...) are the API
    model's, and `cfg` is its config."""

    api: Any
    why: Optional[str]  # the rule that chose the checkpoint; None when the user named it

    def __getattr__(self, name: str) -> Any:
        if name in ("api", "why"):  # not set yet (as in a copy being made): nothing to ask
            raise AttributeError(name)
        return getattr(self.api, "config" if name == "cfg" else name)

    @property
    def note(self) -> str:
        return f"using checkpoint {self.path}" + (f" ({self.why})" if self.why else "") + \
            f", step {self.step}"

    @contextmanager
    def blame(self) -> Iterator[None]:
        """Errors raised inside name the checkpoint when it was chosen automatically."""
        with naming_checkpoint(self.path, self.why):
            yield


@contextmanager
def naming_checkpoint(path: Path | str, why: Optional[str]) -> Iterator[None]:
    """Add the checkpoint and why it was chosen to an error that does not name it already."""
    try:
        yield
    except CharRNNError as exc:
        if why is None or str(path) in str(exc):
            raise
        raise type(exc)(f"{exc} (checkpoint {path}: {why})") from exc


def choose_checkpoint(checkpoint: Optional[str]) -> tuple[Path, Optional[str]]:
    """The checkpoint a user named, else the default one and the rule that chose it."""
    from charrnn.checkpoint import find_default_checkpoint, resolve_checkpoint
    if checkpoint:
        return resolve_checkpoint(checkpoint), None
    return find_default_checkpoint()


def load_model(checkpoint: Optional[str], device_spec: str) -> LoadedModel:
    """Find a checkpoint (the one named, else the default one) and load it through the API,
    using every core this process may use."""
    from charrnn.api import load
    from charrnn.device import set_threads

    path, why = choose_checkpoint(checkpoint)
    with naming_checkpoint(path, why):
        set_threads(None)
        return LoadedModel(load(path, device=device_spec), why)


# the flags `train` and `plan` share, and the config key each sets
FLAG_KEYS = {"--data": "data.path", "--out": "train.out_dir", "--device": "train.device",
             "--max-steps": "train.max_steps", "--max-minutes": "train.max_minutes",
             "--seed": "train.seed", "--threads": "train.threads"}


def flag_overrides(overrides: list[str], flags: dict) -> list[str]:
    """`--set` overrides followed by those of the flags given (a flag wins over --set), each
    flag checked so that its error names the flag, not the key."""
    from charrnn.config import check_flag
    sets = list(overrides) + (["data.corpus=null"] if flags.get("--data") is not None else [])
    for flag, value in flags.items():
        if value is None:
            continue
        if flag == "--data" and value != "-":
            value = os.path.abspath(value)  # from the current folder, whatever the config
        check_flag(flag, FLAG_KEYS[flag], value)
        sets.append(f"{FLAG_KEYS[flag]}={json.dumps(value) if isinstance(value, str) else value}")
    return sets


def refuse_to_replace(path: Path, flag: str, force: bool) -> None:
    """An existing file given as an output is replaced only with --force (a folder is left to
    the caller, whose write refuses it)."""
    if path.exists() and not path.is_dir() and not force:
        raise DataError(f"{flag} {path} already exists (add --force to replace it)")


class StopRequests:
    """The first Ctrl-C or SIGTERM asks the work (a run, a search) to stop after its step, which
    it polls with `should_stop` (this object); a second aborts at once. The command's own
    handlers, put back on the way out."""

    def __init__(self, reporter, message: str) -> None:
        self.reporter, self.message, self.requested, self.previous = reporter, message, False, {}

    def __call__(self) -> bool:  # training's `should_stop` poll
        return self.requested

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.reporter.info(f"{self.message} (press Ctrl-C again to abort at once)")

    def __enter__(self) -> "StopRequests":
        self.previous = {s: signal.signal(s, self._on_signal)
                         for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
