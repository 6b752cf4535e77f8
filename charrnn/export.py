"""Slim model files for sharing: weights, vocab and config, without what only training needs.

An export is a checkpoint in the same format (so sample, eval and info load it like any other)
marked `kind: export`, and holds no optimizer state, RNG states or carried hidden state: about
a third of a `last.pt`. It cannot be resumed.
"""

from __future__ import annotations

from pathlib import Path

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.errors import CheckpointError

KIND = "export"
_KEPT = ("config", "vocab", "step", "best_val_loss", "val_loss", "train_loss")


def export_model(source: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the slim form of `source` (a checkpoint, or a run directory's best.pt) to `out`."""
    src = resolve_checkpoint(source)
    out = Path(out)
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a folder: give the file to write, e.g. "
                              f"{out / 'model.pt'}")
    if not out.parent.is_dir():
        raise CheckpointError(f"--out {out}: folder {out.parent} does not exist")
    if out.exists() and out.resolve() == src.resolve():
        raise CheckpointError(f"--out {out} is the checkpoint being exported: write elsewhere")
    if out.exists() and not force:
        raise CheckpointError(f"--out {out} already exists (add --force to replace it)")
    state = load_checkpoint(src)
    slim = {key: state[key] for key in _KEPT if key in state}
    slim["model"] = {name: t.detach().clone() for name, t in state["model"].items()}
    slim["kind"] = KIND
    slim["exported_from"] = str(src)
    save_checkpoint(slim, out)
    return src
