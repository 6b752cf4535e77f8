"""`charrnn plot` (loss curves) and `charrnn show` (what a model predicts, and where its units fire).

The drawing is in plot.py and the data in probe.py; this module only reads options and streams.
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

from charrnn.cli_common import CHECKPOINT_OPTION, DEVICE_OPTION, QUIET_OPTION, load_model, \
    make_reporter
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


# ------------------------------------------------------------------------------------ show

# surprise bins in bits: their upper bounds, background colours (256-colour) and plain markers
BINS = (1.0, 2.0, 4.0, 8.0, math.inf)
BACKGROUNDS = (None, 229, 222, 209, 196)
MARKERS = " .-+#"
POINTS = 10  # how many of the most surprising characters --top lists


def _bin(bits: float | None) -> int:
    return 0 if bits is None else next(k for k, bound in enumerate(BINS) if bits < bound)


def _visible(ch: str) -> str:
    return {"\n": "\\n", "\t": "\\t", " ": "␣"}.get(ch, ch)


def terminal_view(probe, *, color: bool, top: int = 0) -> str:
    """The text coloured (or, plain, underlined with markers) by surprise, and a legend."""
    bits = probe.surprise_bits()
    bins = [_bin(b) for b in bits]
    if color:
        out = []
        for ch, k in zip(probe.text, bins):
            bg = BACKGROUNDS[k]
            out.append(ch if bg is None or ch == "\n" else f"\x1b[48;5;{bg};30m{ch}\x1b[0m")
        body = "".join(out)
        keys = "  ".join(f"\x1b[48;5;{bg};30m {label} \x1b[0m" if bg else f" {label} "
                         for bg, label in zip(BACKGROUNDS, _bin_labels()))
    else:  # a line of markers under each line of text: tabs kept so that they line up
        lines, start = [], 0
        for line in probe.text.split("\n"):
            marks = "".join("\t" if ch == "\t" else MARKERS[k]
                            for ch, k in zip(line, bins[start:start + len(line)]))
            lines.append(line if not marks.strip() else f"{line}\n{marks.rstrip()}")
            start += len(line) + 1
        body = "\n".join(lines)
        keys = "  ".join(f"'{m}' {label}" for m, label in zip(MARKERS, _bin_labels()))
    scored = [b for b in bits if b is not None]
    legend = (f"surprise (bits): {keys}   mean {sum(scored) / len(scored):.3f} bits/char over "
              f"{len(scored):,} predicted characters")
    text = body.rstrip("\n") + "\n\n" + legend + "\n"
    if top:
        text += _surprising_points(probe, bits, top)
    return text


def _bin_labels() -> list[str]:
    lows = (0.0,) + BINS[:-1]
    return [f"<{hi:g}" if lo == 0 else (f"{lo:g}+" if hi == math.inf else f"{lo:g}-{hi:g}")
            for lo, hi in zip(lows, BINS)]


def _surprising_points(probe, bits: list, top: int) -> str:
    """The most surprising characters, each with its context and what the model expected."""
    order = sorted((t for t, b in enumerate(bits) if b is not None), key=lambda t: -bits[t])
    lines = [f"\nthe {min(POINTS, len(order))} most surprising characters, with the {top} "
             f"the model expected:"]
    for t in sorted(order[:POINTS]):
        before = probe.text[max(0, t - 20):t].replace("\n", "↵")
        expected = ", ".join(f"{_visible(c)!s} {p:.0%}" for c, p in probe.top(t)[:top])
        lines.append(f"  {bits[t]:5.2f} bits at {t:>6}  …{before}[{_visible(probe.text[t])}]"
                     f"  expected: {expected}")
    return "\n".join(lines) + "\n"


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
    device: str = DEVICE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Show how surprised a model is by each character of a text, and where its units fire.

    Example: charrnn show -c runs/tiny --text "sharks feed on tuna" --top 3
    """
    from charrnn.data import read_text
    from charrnn.errors import DataError
    from charrnn.fsutil import write_text_atomic
    from charrnn.probe import page_html, probe_text

    if (text is None) == (text_file is None):
        raise DataError("give the text to show: a TEXT_FILE, - for stdin, or --text (one)")
    if html is not None and not Path(html).resolve().parent.is_dir():
        raise DataError(f"--html {html}: folder {Path(html).parent} does not exist")
    body = text if text is not None else read_text(text_file)
    reporter = make_reporter(quiet)
    loaded = load_model(checkpoint, device)
    with loaded.blame():
        probe = probe_text(loaded.model, loaded.vocab, body, loaded.device, top_k=max(top, 5),
                           units=html is not None)
    reporter.info(loaded.note)
    if html is not None:
        m = loaded.cfg.model
        desc = f"{m.type} {m.num_layers} x {m.hidden_size} ({loaded.path}, step {loaded.step})"
        write_text_atomic(html, page_html(probe, f"charrnn show: {text_file or 'text'}", desc))
        reporter.info(f"wrote {html}")
    if as_json:
        records = probe.records()
        for r in records:
            r["top"] = r["top"] and r["top"][:top or 5]
        loss = -float(probe.logprobs[1:].mean())
        sys.stdout.write(json.dumps({"chars": len(records), "loss": loss,
                                     "bpc": loss / math.log(2), "records": records},
                                    ensure_ascii=False) + "\n")
    elif html is None:
        sys.stdout.write(terminal_view(probe, color=_colour(sys.stdout), top=top))
    sys.stdout.flush()
