"""Options and helpers shared by the command modules (cli.py, cli_sample.py, ...)."""

from __future__ import annotations

from typing import Optional

import typer


# options shared by several commands
CHECKPOINT_OPTION = typer.Option(
    None, "--checkpoint", "-c", metavar="CKPT|RUN_DIR",
    help="Checkpoint file or run directory (its best.pt). Default: $CHARRNN_CHECKPOINT, else "
         "the newest best.pt under ./runs.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")


def _reporter(quiet: bool):
    from charrnn.report import Reporter
    return Reporter(quiet=quiet)


def _load_model(checkpoint: Optional[str], device_spec: str):
    """Find, load and rebuild the model of a checkpoint; also a note naming the file."""
    from charrnn.checkpoint import find_default_checkpoint, load_checkpoint, resolve_checkpoint
    from charrnn.config import config_from_dict
    from charrnn.device import resolve_device, set_threads
    from charrnn.models import build_model
    from charrnn.vocab import Vocab

    if checkpoint:
        path, why = resolve_checkpoint(checkpoint), None
    else:
        path, why = find_default_checkpoint()
    device = resolve_device(device_spec)
    set_threads(None)
    state = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(state["config"], source=f"{path} (config)")
    model = build_model(cfg.model, len(state["vocab"]))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    note = f"using checkpoint {path}" + (f" ({why})" if why else "") + f", step {state['step']}"
    return model, Vocab(state["vocab"]), cfg, note, device


def _decode_escapes(text: str) -> str:
    """`\\n`, `\\0` and other backslash escapes in an option value, other text kept as is."""
    if "\\" not in text:
        return text
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
