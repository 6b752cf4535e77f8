"""Slim model files for sharing: weights, vocab and config, without what only training needs.

An export is a checkpoint in the same format (so sample, eval and info load it like any other)
marked `kind: export`, and holds no optimizer state, RNG states or carried hidden state: about
a third of a `last.pt`. It cannot be resumed. With `quantize` ("int8" or "bf16") its weight
matrices are stored in that type (quantize.py): an int8 file is about a quarter of an fp32 one.
"""

from __future__ import annotations

from pathlib import Path

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.errors import CheckpointError, TrainingFailed
from charrnn.quantize import check_mode, quantize_weights

KIND = "export"
_KEPT = ("config", "vocab", "step", "best_val_loss", "val_loss", "train_loss")


def export_model(source: str | Path, out: str | Path, force: bool = False,
                 quantize: str | None = None) -> Path:
    """Write the slim form of `source` (a checkpoint, or a run directory's best.pt) to `out`,
    its weight matrices in `quantize` ("int8", "bf16") if given."""
    if quantize is not None:
        check_mode(quantize)
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
    if out.exists() and _resumable(out):
        raise CheckpointError(f"--out {out} is a training checkpoint (a run can resume from it), "
                              f"which an exported model would replace: write elsewhere")
    state = load_checkpoint(src)
    slim = {key: state[key] for key in _KEPT if key in state}
    if quantize is None:
        slim["model"] = {name: t.detach().clone() for name, t in state["model"].items()}
    else:
        slim["model"], slim["quantization"] = quantize_weights(state["model"], quantize)
    slim["kind"] = KIND
    slim["exported_from"] = str(src)
    try:
        save_checkpoint(slim, out)
    except TrainingFailed as exc:  # an --out that cannot be written is the user's to fix
        raise CheckpointError(f"--out {out} cannot be written: "
                              f"{getattr(exc.__cause__, 'strerror', None) or exc}") from None
    return src


def _resumable(path: Path) -> bool:
    """Whether `path` is a charrnn checkpoint that is not an export (one a run resumes from)."""
    try:
        return load_checkpoint(path).get("kind") != KIND
    except CheckpointError:
        return False  # not a checkpoint at all: --force may replace it
