"""`charrnn compress` and `charrnn decompress`: a text stored in the bits its model predicts
(the work is in analysis/compress.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from charrnn.cli.adapt import (ADAPT_DECAY_OPTION, ADAPT_LR_OPTION, ADAPT_OPTION,
                               ADAPT_STREAMS_OPTION, ADAPT_WINDOW_OPTION, adapt_settings)
from charrnn.cli.common import (CHECKPOINT_OPTION, QUIET_OPTION, load_model, make_reporter,
                                refuse_to_replace)
from charrnn.errors import DataError, MissingDependency

INPUT_ARGUMENT = typer.Argument("-", metavar="[FILE|-]", help="What to read; - (the default) "
                                                              "is stdin.")
OUT_OPTION = typer.Option("-", "--out", "-o", metavar="FILE|-",
                          help="Where to write; - (the default) is stdout.")
FORCE_OPTION = typer.Option(False, "--force", help="Replace --out FILE if it exists.")


def compress_cmd(
    source: str = INPUT_ARGUMENT,
    out: str = OUT_OPTION,
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    streams: Optional[int] = typer.Option(None, "--streams", min=1, max=1024,
                                          help="Parallel streams the text is cut into (default: "
                                               "by its length, or --scratch's plan; more is "
                                               "faster, each costs a cold start)."),
    adapt: bool = ADAPT_OPTION,
    adapt_lr: Optional[float] = ADAPT_LR_OPTION,
    adapt_decay: Optional[float] = ADAPT_DECAY_OPTION,
    adapt_window: Optional[int] = ADAPT_WINDOW_OPTION,
    adapt_streams: Optional[int] = ADAPT_STREAMS_OPTION,
    scratch: bool = typer.Option(False, "--scratch",
                                 help="No model file: a model starts from a seed and learns as "
                                      "it reads, so the compressed file alone is enough to "
                                      "decompress (slower; best on texts of a megabyte or "
                                      "more)."),
    force: bool = FORCE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Store a UTF-8 text in about as many bits as the model's loss on it (bits per character).

    Decompressing needs the same model file, except with --scratch. The bytes are kept as they
    are (a byte-order mark, CR LF); characters the model does not know are coded too, at a
    cost. With --adapt the model learns as it reads (smaller, slower); the file records how, so
    decompress needs no option for it.

    Example: charrnn compress -c runs/shakespeare-cpu play.txt -o play.crz
    """
    _require_constriction()
    settings = adapt_settings(adapt, adapt_lr, adapt_decay, adapt_window, adapt_streams)
    if scratch and (checkpoint or settings):
        raise DataError(f"--scratch uses no model file: leave out "
                        f"{'-c/--checkpoint' if checkpoint else '--adapt'}")
    _refuse_terminal(out)
    data = _read(source)
    target = _check_out(out, force)
    started = time.perf_counter()
    if scratch:
        blob, note = _compress_from_scratch(data, streams)
    else:
        blob, note = _compress_with_model(data, _model_for(checkpoint, target), streams,
                                          settings)
    _write(target, blob)
    chars = len(data.decode("utf-8"))
    make_reporter(quiet).info(
        f"{note}: {len(data):,} bytes -> {len(blob):,} bytes"
        + (f" ({8 * len(blob) / chars:.3f} bits per character)" if chars else "")
        + f" in {time.perf_counter() - started:.1f} s")


def _model_for(checkpoint, target: Optional[Path]):
    """The model to code with, which the output must not replace, --force or not."""
    loaded = load_model(checkpoint, "cpu")
    if target is not None and target.resolve() == Path(loaded.path).resolve():
        raise DataError(f"--out {target} is the model file in use: write elsewhere")
    return loaded


def _compress_with_model(data: bytes, loaded, streams, settings) -> tuple[bytes, str]:
    from charrnn.analysis.compress import compress
    with loaded.blame():
        return compress(data, loaded.model, loaded.vocab, streams=streams,
                        adapt=settings), loaded.note


def _compress_from_scratch(data: bytes, streams) -> tuple[bytes, str]:
    from charrnn.analysis.compress import compress
    from charrnn.analysis.scratch import ScratchPlan
    plan = ScratchPlan()
    return (compress(data, scratch=plan, streams=streams),
            f"from scratch ({plan.family} {plan.num_layers}x{plan.hidden_size})")


def decompress_cmd(
    source: str = INPUT_ARGUMENT,
    out: str = OUT_OPTION,
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    force: bool = FORCE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Restore a text `charrnn compress` stored, byte for byte, with the model it used (a file
    made with --scratch needs none: -c is not needed, and ignored).

    What it restored is checked against the original's sha256 before a byte is written.

    Example: charrnn decompress -c runs/shakespeare-cpu play.crz -o play.txt
    """
    _require_constriction()
    blob = _read(source)
    target = _check_out(out, force)
    from charrnn.analysis.compress import decompress, needs_model
    if needs_model(blob):
        loaded = _model_for(checkpoint, target)
        with loaded.blame():
            data, note = decompress(blob, loaded.model, loaded.vocab), loaded.note
    else:
        data, note = decompress(blob), "from scratch"
    _write(target, data)
    make_reporter(quiet).info(f"{note}: restored {len(data):,} bytes")


def _require_constriction() -> None:
    try:
        import constriction  # noqa: F401
    except ImportError:
        raise MissingDependency("compress needs the constriction range coder: "
                                "pip install 'charrnn[compress]'") from None


def _refuse_terminal(out: str) -> None:
    if out == "-" and sys.stdout.isatty():
        raise DataError("compressed data is binary: give --out FILE or redirect stdout "
                        "(charrnn compress ... > file.crz)")


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a folder, not a file") from None


def _check_out(out: str, force: bool) -> Optional[Path]:
    if out == "-":
        return None
    path = Path(out)
    if path.is_dir():
        raise DataError(f"--out {out} is a folder: give a file name")
    refuse_to_replace(path, "--out", force)
    return path


def _write(target: Optional[Path], data: bytes) -> None:
    """To stdout, or to FILE in one rename (never half a file)."""
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from charrnn.fsutil import atomic_write
    with atomic_write(target) as fh:
        fh.write(data)
