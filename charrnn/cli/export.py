"""`charrnn export`: write a slim model file (the work is in export.py)."""

from __future__ import annotations

from typing import Optional

import typer

from charrnn.cli.common import QUIET_OPTION, make_reporter


def export_cmd(
    run: str = typer.Argument(..., metavar="RUN_DIR|CKPT",
                              help="Run directory (its best.pt) or checkpoint to export."),
    out: str = typer.Option(..., "--out", "-o", metavar="FILE",
                            help="The file to write, e.g. model.pt."),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", metavar="int8|bf16",
        help="Store the weight matrices as int8 (a scale per row; about a quarter of the fp32 "
             "file) or bf16 (half); biases stay fp32. Loading turns them back into fp32."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Write a slim model file (weights, vocab, config; no optimizer state) to share or serve.

    sample, eval, show and info load it like any checkpoint, quantized or not; training cannot
    resume from it.

    Example: charrnn export runs/tiny --out tiny.pt --quantize int8
    """
    import os

    from charrnn.export import export_model

    src = export_model(run, out, force=force, quantize=quantize)
    make_reporter(quiet).info(f"exported {src} to {out}{f' ({quantize})' if quantize else ''} "
                              f"({os.path.getsize(src) / 1e6:.2f} MB -> "
                              f"{os.path.getsize(out) / 1e6:.2f} MB)")
