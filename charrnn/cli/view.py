"""`charrnn plot` (loss curves) and `charrnn show` (what a model predicts, and where its units fire).

The drawing is in analysis/plot.py and the data in analysis/probe.py; this module only reads options and streams.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from charrnn.cli.common import CHECKPOINT_OPTION, DEVICE_OPTION, QUIET_OPTION, load_model, \
    make_reporter, refuse_to_replace
from charrnn.config import INT64_MAX


class XAxis(str, Enum):
    step = "step"
    time = "time"


def _colour(stream) -> bool:
    """Colour only for a terminal, and never under NO_COLOR (any non-empty value)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def plot_cmd(
    runs: List[str] = typer.Argument(..., metavar="RUN_DIR",
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
    from charrnn.analysis.plot import load_curves, run_names, save_image, summary, terminal_chart

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


# ------------------------------------------------------------------------------------ show

# surprise bins in bits: their upper bounds, background colours (256-colour) and plain markers
BINS = (1.0, 2.0, 4.0, 8.0, math.inf)
BACKGROUNDS = (None, 229, 222, 209, 196)
MARKERS = " .-+#"
POINTS = 10  # how many of the most surprising characters --top lists


def _visible(ch: str) -> str:
    return {"\n": "\\n", "\t": "\\t", " ": "␣"}.get(ch, ch)


def _marker_line(line: str, marks: str) -> str:
    """`marks` (one per character of `line`) placed by display column: a wide (CJK) character
    takes two columns, a combining one none; tabs are kept so that the markers line up."""
    if line.isascii() and "\t" not in line:
        return marks
    from rich.cells import cell_len

    def placed(ch: str, mark: str) -> str:
        width = cell_len(ch)
        return "\t" if ch == "\t" else (mark + " " * (width - 1) if width else "")

    return "".join(placed(ch, mark) for ch, mark in zip(line, marks))


def terminal_view(probe, *, color: bool, top: int = 0) -> str:
    """The text coloured (or, plain, underlined with markers) by surprise, and a legend.

    The bins are one byte a character, made without a Python object per character."""
    import ctypes

    import torch

    bits = probe.logprobs.double() / -math.log(2)  # nan for the first character
    bins = torch.bucketize(bits, torch.tensor(BINS[:-1], dtype=torch.double), right=True)
    bins[0] = 0
    bins = bins.to(torch.uint8)
    codes = ctypes.string_at(bins.data_ptr(), bins.numel()).decode("latin-1")  # chr(bin)
    if color:
        out = []
        for ch, k in zip(probe.text, codes):
            bg = BACKGROUNDS[ord(k)]
            out.append(ch if bg is None or ch == "\n" else f"\x1b[48;5;{bg};30m{ch}\x1b[0m")
        body = "".join(out)
        keys = "  ".join(f"\x1b[48;5;{bg};30m {label} \x1b[0m" if bg else f" {label} "
                         for bg, label in zip(BACKGROUNDS, _bin_labels()))
    else:  # a line of markers under each line of text
        marks = codes.translate({k: m for k, m in enumerate(MARKERS)})
        lines, start = [], 0
        for line in probe.text.split("\n"):
            under = _marker_line(line, marks[start:start + len(line)]).rstrip()
            lines.append(f"{line}\n{under}" if under.strip() else line)
            start += len(line) + 1
        body = "\n".join(lines)
        keys = "  ".join(f"'{m}' {label}" for m, label in zip(MARKERS, _bin_labels()))
    scored = bits[1:]
    legend = (f"surprise (bits): {keys}   mean {float(scored.mean()):.3f} bits/char over "
              f"{len(scored):,} predicted characters")
    text = body.rstrip("\n") + "\n\n" + legend + "\n"
    if top:
        text += _surprising_points(probe, bits, top)
    return text


def _bin_labels() -> list[str]:
    lows = (0.0,) + BINS[:-1]
    return [f"<{hi:g}" if lo == 0 else (f"{lo:g}+" if hi == math.inf else f"{lo:g}-{hi:g}")
            for lo, hi in zip(lows, BINS)]


def _surprising_points(probe, bits, top: int) -> str:
    """The most surprising characters, most surprising first (ties in text order), each with
    its context and what the model expected. `bits`: a tensor, nan for the first character."""
    import torch

    order = (torch.sort(bits[1:], descending=True, stable=True).indices[:POINTS] + 1).tolist()
    lines = [f"\nthe {len(order)} most surprising characters, with the {top} "
             f"the model expected:"]
    for t in order:
        before = probe.text[max(0, t - 20):t].replace("\n", "↵")
        expected = ", ".join(f"{_visible(c)!s} {p:.0%}" for c, p in probe.top(t)[:top])
        lines.append(f"  {float(bits[t]):5.2f} bits at {t:>6}  …{before}"
                     f"[{_visible(probe.text[t])}]  expected: {expected}")
    return "\n".join(lines) + "\n"


def _check_page_path(page: Path, force: bool) -> None:
    """The page can be written there, and replaces nothing the user did not say to replace."""
    from charrnn.errors import DataError
    folder = page.resolve().parent
    if not folder.is_dir():
        raise DataError(f"--html {page}: folder {page.parent} does not exist")
    refuse_to_replace(page, "--html", force)
    if not os.access(folder, os.W_OK):
        raise DataError(f"--html {page}: folder {page.parent} cannot be written")


def show_cmd(
    text_file: Optional[str] = typer.Argument(None, metavar="[TEXT_FILE|-]",
                                              help="Text to read (- for stdin).",
                                              show_default=False),
    text: Optional[str] = typer.Option(None, "--text", help="The text itself, instead of a "
                                                             "file."),
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    html: Optional[str] = typer.Option(None, "--html", metavar="FILE",
                                       help="Write a self-contained page: surprise, the "
                                            "likeliest characters, and every unit's activity."),
    as_json: bool = typer.Option(False, "--json", help="Print per-character records (char, "
                                                        "logprob in nats, top) as JSON."),
    top: int = typer.Option(0, "--top", min=0, max=INT64_MAX, metavar="K",
                            help="Under the text, list the ten most surprising characters, each "
                                 "with the K the model expected there (--json: K choices per "
                                 "record, default 5)."),
    force: bool = typer.Option(False, "--force", help="Replace the --html file if it exists."),
    device: str = DEVICE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Show how surprised a model is by each character of a text, and where its units fire.

    Example: charrnn show -c runs/tiny --text "sharks feed on tuna" --top 3
    """
    from charrnn.text.data import read_text
    from charrnn.errors import DataError
    from charrnn.fsutil import write_text_atomic
    from charrnn.analysis.probe import page_html, probe_text

    if (text is None) == (text_file is None):
        raise DataError("give the text to show: a TEXT_FILE, - for stdin, or --text (one)")
    if html is not None:
        _check_page_path(Path(html), force)
    body = text if text is not None else read_text(text_file)
    reporter = make_reporter(quiet)
    loaded = load_model(checkpoint, device)
    with loaded.blame():
        probe = probe_text(loaded.model, loaded.vocab, body, loaded.device, top_k=max(top, 5),
                           units=html is not None)
    if html is not None:  # written before anything is said, so a failure is the one line
        m = loaded.cfg.model
        desc = f"{m.type} {m.num_layers} x {m.hidden_size} ({loaded.path}, step {loaded.step})"
        write_text_atomic(html, page_html(probe, f"charrnn show: {text_file or 'text'}", desc))
    reporter.info(loaded.note)
    if html is not None:
        reporter.info(f"wrote {html}")
    if as_json:
        sys.stdout.write(json.dumps(probe.report(top or 5), ensure_ascii=False) + "\n")
    elif html is None:
        sys.stdout.write(terminal_view(probe, color=_colour(sys.stdout), top=top))
    sys.stdout.flush()
