"""`charrnn plot` (loss curves) and `charrnn show` (what a model predicts, and where its units fire).

The drawing is in plot.py and the data in probe.py; this module only reads options and streams.
"""

from __future__ import annotations

import os
import shutil
import sys
from enum import Enum
from typing import List, Optional

import typer


class XAxis(str, Enum):
    step = "step"
    time = "time"


def _colour(stream) -> bool:
    """Colour only for a terminal, and never under NO_COLOR (any non-empty value)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def plot_cmd(
    runs: List[str] = typer.Argument(..., metavar="RUN_DIR...",
                                     help="Run directories to draw; several overlay."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="FILE.png|FILE.svg",
                                      help="Write an image instead of drawing in the terminal."),
    x: XAxis = typer.Option(XAxis.step, "--x",
                            help="Horizontal axis: optimizer steps, or minutes of training."),
    bits: bool = typer.Option(False, "--bits", help="Losses in bits per character instead of "
                                                    "nats."),
) -> None:
    """Draw training and validation loss curves from runs' metrics.jsonl.

    Example: charrnn plot runs/tiny runs/tiny-gru --bits --out loss.png
    """
    from charrnn.plot import load_curves, run_names, save_image, summary, terminal_chart

    curves = [load_curves(p, name) for p, name in zip(runs, run_names(runs))]
    if out is not None:
        save_image(curves, out, x=x.value, bits=bits)
        sys.stderr.write(f"wrote {out}\n")
        return
    lines = summary(curves, bits)
    size = shutil.get_terminal_size((80, 24))
    height = max(12, min(size.lines - len(lines) - 2, 40))
    chart = terminal_chart(curves, x=x.value, bits=bits, width=max(size.columns, 40),
                           height=height, color=_colour(sys.stdout))
    sys.stdout.write(chart.rstrip("\n") + "\n" + "".join(line + "\n" for line in lines))
    sys.stdout.flush()
