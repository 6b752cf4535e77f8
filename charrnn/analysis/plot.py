"""Loss curves from a run's metrics.jsonl: a terminal chart (plotext) or an image (matplotlib).

    curves = [load_curves("runs/tiny"), load_curves("runs/gru")]
    print(terminal_chart(curves, width=100, height=24, color=False))
    save_image(curves, "loss.png")

Both libraries are the optional extra `charrnn[plot]`; they are imported only when drawn, and a
missing one is a MissingDependency error naming the install command.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import DataError, MissingDependency
from charrnn.fsutil import atomic_write

INSTALL_HINT = "pip install 'charrnn[plot]'"
IMAGE_FORMATS = ("png", "svg")
X_AXES = ("step", "time")
_PLAIN_MARKERS = "*o+x#@%&"


@dataclass
class Series:
    """One curve: x values (steps or minutes) and losses."""
    label: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class Curves:
    """The training and validation losses of one run, in nats, with step and wall time."""
    name: str
    train: list[tuple[int, float, float]]  # (step, seconds, loss)
    val: list[tuple[int, float, float]]

    def series(self, x: str = "step", bits: bool = False) -> list[Series]:
        """The curves to draw: x in steps or minutes, y in nats or bits per character."""
        scale = 1 / math.log(2) if bits else 1.0
        out = []
        for kind, points in (("train", self.train), ("val", self.val)):
            if x == "time":  # records without a time cannot be placed
                points = [(p[1] / 60, p[1], p[2]) for p in points if math.isfinite(p[1])]
            if points:
                out.append(Series(f"{self.name} {kind}", [p[0] for p in points],
                                  [p[2] * scale for p in points]))
        return out


def require(module: str):
    """Import a plotting library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{module.split('.')[0]} is not installed; install the plotting "
                                f"extra with: {INSTALL_HINT}") from None


def load_curves(run_dir: str | Path, name: str | None = None) -> Curves:
    """Read `metrics.jsonl` of a run directory (or the file itself); unreadable lines are skipped."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{run_dir}: no metrics.jsonl there (give a run directory that "
                        f"`charrnn train` wrote)")
    train, val = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                step, seconds = int(rec["step"]), float(rec.get("time", math.nan))
            except (ValueError, KeyError, TypeError):
                continue  # e.g. a line cut short by a crash
            for key, points in (("train_loss", train), ("val_loss", val)):
                if isinstance(rec.get(key), (int, float)) and math.isfinite(rec[key]):
                    points.append((step, seconds, float(rec[key])))
    if not train and not val:
        raise DataError(f"{path} holds no losses yet (the first are logged after "
                        f"train.log_every steps)")
    return Curves(name or Path(run_dir).name or str(run_dir), train, val)


def run_names(paths: list[str]) -> list[str]:
    """Short legend names: the folder names, or the paths as given where folder names clash."""
    names = [Path(p.rstrip("/")).name or p for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def _labels(x: str, bits: bool) -> tuple[str, str]:
    return ("step" if x == "step" else "minutes"), (
        "loss (bits/char)" if bits else "loss (nats/char)")


def terminal_chart(curves: list[Curves], *, x: str = "step", bits: bool = False,
                   width: int = 80, height: int = 20, color: bool = True) -> str:
    """The curves as a text chart; with `color=False` it has no escape codes at all."""
    plt = require("plotext")
    plt.clear_figure()
    plt.plot_size(width, height)
    plt.theme("clear")
    for i, s in enumerate(sc for c in curves for sc in c.series(x, bits)):
        marker = "braille" if color else _PLAIN_MARKERS[i % len(_PLAIN_MARKERS)]
        plt.plot(s.x, s.y, label=s.label, marker=marker)
    xlabel, ylabel = _labels(x, bits)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    chart = plt.build()
    plt.clear_figure()
    return chart if color else plt.uncolorize(chart)


def summary(curves: list[Curves], bits: bool = False) -> list[str]:
    """One line per run: the last training loss and the best validation loss, with their steps."""
    scale, unit = (1 / math.log(2), "bits/char") if bits else (1.0, "nats/char")
    lines = []
    for c in curves:
        parts = [c.name]
        if c.train:
            parts.append(f"train {c.train[-1][2] * scale:.4f} at step {c.train[-1][0]}")
        if c.val:
            best = min(c.val, key=lambda p: p[2])
            parts.append(f"best val {best[2] * scale:.4f} at step {best[0]}")
        lines.append("  ".join(parts) + f" ({unit})")
    return lines


def save_image(curves: list[Curves], path: str | Path, *, x: str = "step",
               bits: bool = False) -> None:
    """Write the curves as a PNG or SVG (by the file's extension), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise DataError(f"--out {path}: the file must end in .png or .svg")
    if not path.parent.is_dir():
        raise DataError(f"--out {path}: folder {path.parent} does not exist")
    require("matplotlib")
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # files only, never a window
    pyplot = importlib.import_module("matplotlib.pyplot")
    fig, ax = pyplot.subplots(figsize=(8, 4.5), dpi=120)
    try:
        for i, c in enumerate(curves):
            colour = f"C{i % 10}"
            for s in c.series(x, bits):
                val = s.label.endswith(" val")
                ax.plot(s.x, s.y, color=colour, label=s.label, linestyle="--" if val else "-",
                        marker="o" if val else None, markersize=3, linewidth=1.5)
        xlabel, ylabel = _labels(x, bits)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=fmt)
    finally:
        pyplot.close(fig)
