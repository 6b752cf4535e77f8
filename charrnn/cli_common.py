"""What the command modules share: common options, the reporter, and loading a model to use.

Imported by cli.py and by each command-group module; imports nothing heavy at module level
(torch loads inside `load_model`), so `charrnn --help` stays fast.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from charrnn.errors import CharRNNError

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
    """A model ready for inference, with what the commands say about it."""

    model: Any
    vocab: Any
    cfg: Any
    device: Any
    path: Path
    why: Optional[str]  # the rule that chose the checkpoint; None when the user named it
    step: int
    trained_on: Optional[dict] = None  # the fingerprint of its training text, where recorded

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
    """Find a checkpoint, rebuild its model on the device, and keep nothing else it holds.

    The checkpoint is read into CPU memory and only the model moves to the device: the
    optimizer state (twice the weights for Adam) is dropped, never copied to a GPU.
    """
    from charrnn.checkpoint import load_checkpoint
    from charrnn.config import config_from_dict
    from charrnn.device import resolve_device, set_threads
    from charrnn.models import build_model
    from charrnn.vocab import Vocab

    path, why = choose_checkpoint(checkpoint)
    with naming_checkpoint(path, why):
        device = resolve_device(device_spec)
        set_threads(None)
        state = load_checkpoint(path, map_location="cpu")
        state.pop("optimizer", None)
        cfg = config_from_dict(state["config"], source=f"{path} (config)")
        model = build_model(cfg.model, len(state["vocab"]))
        try:
            model.load_state_dict(state.pop("model"))
        except (RuntimeError, KeyError, TypeError) as exc:
            from charrnn.errors import CheckpointError
            raise CheckpointError(f"{path}: its weights do not fit its model config "
                                  f"({str(exc).splitlines()[0]})") from None
        model.to(device).eval()
        vocab = Vocab(state["vocab"])
    return LoadedModel(model, vocab, cfg, device, path, why, state["step"], state.get("data"))


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


def train_config(config, sets: list[str], init_from: str | None):
    """The config of a new run and the keys its user set. With no CONFIG the run is planned
    (train.plan, unless --set says otherwise) and, with --init-from, takes the checkpoint's
    model shape."""
    from charrnn.config import default_config, load_config, set_keys
    if config is None and init_from is not None:  # no config: the checkpoint's model shape
        from charrnn.finetune import shape_overrides
        sets = shape_overrides(init_from) + sets
    if config is None:
        sets = ["train.plan=true"] + sets
    cfg = load_config(config, sets) if config is not None else default_config(sets)
    return cfg, set_keys(config, [s for s in sets if s != "train.plan=true"])
