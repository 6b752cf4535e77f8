#!/usr/bin/env python
"""The sizing study (`make sizing`, `make sizing-quick`): which model, batch and dropout train
best for a text of a given size in a given number of minutes on this machine.

For every text and budget it trains the planned run (`charrnn train --data TEXT --max-minutes M`,
no config), the fixed defaults of an unplanned run (`--set train.plan=false`) and a grid of
shapes, batches and dropouts around them, each a whole `charrnn train` process scored by
`charrnn eval` on the text's held-out tenth. The table (JSON, one row per run) says where the
planner's choice stands among the alternatives: its constants come from here.

Run it on an idle machine, one job at a time: the budgets are wall-clock minutes.

    .venv/bin/python benchmarks/sizing.py --quick            # ~15 minutes: 2 texts, 1 minute
    .venv/bin/python benchmarks/sizing.py                    # about 3 hours
    .venv/bin/python benchmarks/sizing.py --texts shakespeare-50k --minutes 2 --grid small
    .venv/bin/python benchmarks/sizing.py --summarise benchmarks/results/sizing-*.json --out c.png

The table goes to stdout as markdown, the rows to a JSON file and a chart (PNG) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"

# name -> how to make the text in a scratch folder (its path, or a quoted glob)
TEXTS = {
    "shakespeare-50k": lambda tmp: _slice(tmp, 50_000),
    "shakespeare-200k": lambda tmp: _slice(tmp, 200_000),
    "shakespeare": lambda tmp: str(SHAKESPEARE),
    "licences": lambda tmp: _licences(tmp),  # ~170 KB of English legal prose, where present
    "python-stdlib": lambda tmp: _stdlib(tmp, 5_000_000),  # source code, a larger alphabet
    "python-stdlib-all": lambda tmp: _stdlib_glob(),  # ~11 MB by a quoted glob, where present
    # a large alphabet: X11's compose table (500 KB, about 2,000 distinct characters), where present
    "compose-table": lambda tmp: _present(Path("/usr/share/X11/locale/en_US.UTF-8/Compose")),
}
GRIDS = {  # (layers, hidden, batch, dropout) tried beside the plan and the defaults
    "small": [(1, 128, 16, 0.0), (2, 128, 16, 0.3), (2, 256, 16, 0.3)],
    # dropout against the model's size at one budget (the planner's dropout rule)
    "dropout": [(1, 128, 16, 0.0), (1, 256, 16, 0.0), (1, 256, 16, 0.1), (2, 128, 16, 0.3),
                (2, 256, 16, 0.0), (2, 256, 16, 0.3)],
    "dropout-wide": [(1, 256, 16, 0.2), (1, 256, 16, 0.3)],
    # the full study: smaller, wider and deeper than the usual plans, with and without dropout
    "full": [(1, 128, 16, 0.0), (1, 256, 16, 0.1), (2, 256, 16, 0.3), (1, 512, 16, 0.0)],
    # at 10 minutes: the hand-made Shakespeare config's shape and a wider single layer
    "long": [(2, 256, 16, 0.3), (1, 512, 16, 0.1)],
    # a plan checked against the one the previous rule gave (with --without-defaults)
    "licences-10min": [(1, 256, 16, 0.3)],
    "none": [],  # the planned run (and the defaults) alone
}
QUICK = {"texts": ["licences", "shakespeare"], "minutes": [1.0], "grid": "small"}
# a few hours here: every text at 2 minutes, the two long texts at 10 as well
FULL = {"texts": ["shakespeare-50k", "shakespeare-200k", "shakespeare", "licences",
                  "python-stdlib-all", "compose-table"], "minutes": [2.0], "grid": "full",
        "long": {"texts": ["shakespeare", "python-stdlib-all"], "minutes": [10.0],
                 "grid": "long"}}


def _slice(tmp: Path, chars: int) -> str:
    path = tmp / f"shakespeare-{chars}.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return str(path)


def _licences(tmp: Path) -> str | None:
    """The licence texts a Debian system keeps (each file once: the links are skipped)."""
    folder = Path("/usr/share/common-licenses")
    files = sorted(p for p in folder.glob("*") if p.is_file() and not p.is_symlink())
    if not files:
        return None
    path = tmp / "licences.txt"
    path.write_text("".join(p.read_text(encoding="utf-8", errors="replace") for p in files),
                    encoding="utf-8")
    return str(path)


def _stdlib(tmp: Path, chars: int) -> str:
    """The first `chars` characters of the installed standard library's top-level modules."""
    path, parts, total = tmp / "python-stdlib.txt", [], 0
    for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = source.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= chars:
            break
    path.write_text("".join(parts)[:chars], encoding="utf-8")
    return str(path)


def _present(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _stdlib_glob() -> str | None:
    """A quoted glob of the standard library's source alone: a folder of it without the
    installed packages (Debian's /usr/lib/python3.X keeps them elsewhere)."""
    folders = [Path(sysconfig.get_paths()["stdlib"]), *sorted(Path("/usr/lib").glob("python3.*"))]
    for folder in folders:
        if folder.is_dir() and not (folder / "site-packages").exists():
            return str(folder / "**" / "*.py")
    return None


def charrnn(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def trial(text: str, minutes: float, out: Path, sets: list[str]) -> dict:
    """One whole run: train for `minutes`, then score its held-out split."""
    started = time.monotonic()
    proc = charrnn("train", "--data", text, "--max-minutes", str(minutes), "--out", str(out),
                   "--force", *sets)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:], "wall_seconds": wall}
    result = json.loads(charrnn("eval", "-c", str(out), "--json").stdout)
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = max((m.get("step", 0) for m in metrics), default=0)
    rates = [m["chars_per_sec"] for m in metrics if "chars_per_sec" in m]
    return {"val_loss": result["loss"], "steps": steps, "wall_seconds": round(wall, 1),
            "chars_per_sec": round(sorted(rates)[len(rates) // 2]) if rates else None,
            "model": config["model"], "train": {k: config["train"][k] for k in (
                "batch_size", "seq_len", "lr", "warmup_steps", "threads", "max_minutes")}}


def grid_sets(layers: int, hidden: int, batch: int, dropout: float) -> list[str]:
    """An unplanned run of this shape; the rest as a planned run would choose it."""
    return ["--set", f"model.num_layers={layers}", "--set", f"model.hidden_size={hidden}",
            "--set", f"train.batch_size={batch}", "--set", f"model.dropout={dropout}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 texts, 1 minute, a small grid")
    parser.add_argument("--texts", help=f"comma-separated, of: {', '.join(TEXTS)}")
    parser.add_argument("--minutes", help="comma-separated budgets")
    parser.add_argument("--grid", choices=list(GRIDS))
    parser.add_argument("--grid-only", action="store_true",
                        help="skip the planned run and the fixed defaults")
    parser.add_argument("--without-defaults", action="store_true",
                        help="skip the fixed defaults' run (the plan and the grid only)")
    parser.add_argument("--out", type=Path, help="the JSON table (default: under "
                                                 "benchmarks/results/); the chart beside it")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSON",
                        help="train nothing: the table and chart of saved results (--out: "
                             "the chart's path, default beside the first)")
    args = parser.parse_args()
    if args.summarise:
        rows = [row for path in args.summarise
                for row in json.loads(path.read_text(encoding="utf-8"))["rows"]]
        print(summary(rows))
        chart(rows, args.out or args.summarise[0].with_suffix(".png"))
        return
    mode = dict(QUICK if args.quick else FULL)
    parts = [mode] + ([mode["long"]] if "long" in mode else [])
    if args.texts or args.minutes or args.grid:  # one part, as asked
        part = {"texts": args.texts.split(",") if args.texts else mode["texts"],
                "minutes": ([float(m) for m in args.minutes.split(",")] if args.minutes
                            else mode["minutes"]),
                "grid": args.grid or mode["grid"]}
        mode, parts = part, [part]
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"sizing-{'quick-' if args.quick else ''}{time.strftime('%Y-%m-%d')}.json")
    rows: list[dict] = []
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_before": os.getloadavg(), "mode": mode, "rows": rows}

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            run_part(part, Path(scratch), record, planned=not args.grid_only,
                     defaults=not (args.grid_only or args.without_defaults))
    print(summary(rows))
    print(f"table: {out}", file=sys.stderr)
    chart(rows, out.with_suffix(".png"))


def run_part(part: dict, tmp: Path, record: Callable[[dict], None], *, planned: bool = True,
             defaults: bool = True) -> None:
    """Every text of `part` at each of its budgets: the planned run, the fixed defaults and
    the part's grid, one whole run after another."""
    for name in part["texts"]:
        text = TEXTS[name](tmp)
        if text is None:
            print(f"{name}: not on this machine, skipped", file=sys.stderr)
            continue
        for minutes in part["minutes"]:
            runs = (([("planned", [])] if planned else [])
                    + ([("defaults", ["--set", "train.plan=false"])] if defaults else []))
            runs += [(f"{l}x{h} b{b} d{d}", grid_sets(l, h, b, d))
                     for l, h, b, d in GRIDS[part["grid"]]]
            for label, sets in runs:
                record({"text": name, "minutes": minutes, "run": label,
                        **trial(text, minutes, tmp / "run", sets), "load": os.getloadavg()[0]})


def summary(rows: list[dict]) -> str:
    """Per text and budget: the planned run, the defaults and the best of the grid."""
    lines = ["| text | minutes | planned | its plan | defaults | best of the grid | its run |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["text"], row["minutes"]), []).append(row)
    for (text, minutes), group in groups.items():
        loss = {r["run"]: r.get("val_loss") for r in group}
        grid = [r for r in group if r["run"] not in ("planned", "defaults") and "val_loss" in r]
        best = min(grid, key=lambda r: r["val_loss"]) if grid else {"run": "-", "val_loss": None}
        fmt = lambda run: ("-" if run not in loss  # noqa: E731
                           else "failed" if loss[run] is None else f"{loss[run]:.3f}")
        best_loss = f"{best['val_loss']:.3f}" if best["val_loss"] is not None else "-"
        plan = next((shape(r) for r in group if r["run"] == "planned" and "model" in r), "-")
        lines.append(f"| {text} | {minutes:g} | {fmt('planned')} | {plan} | {fmt('defaults')} | "
                     f"{best_loss} | {best['run']} |")
    return "\n".join(lines)


def shape(row: dict) -> str:
    m = row["model"]
    return f"{m['num_layers']}x{m['hidden_size']} d{m['dropout']:g}"


def label(row: dict) -> str:
    """A run's name, with its shape when the name does not say it (the plan, the defaults)."""
    if row["run"] not in ("planned", "defaults") or "model" not in row:
        return row["run"]
    return f"{row['run']} ({shape(row)})"


def chart(rows: list[dict], path: Path) -> None:
    """One panel per text and budget: each run's validation loss, the planned run and the fixed
    defaults in their own colours (needs matplotlib: `pip install -e '.[plot]'`)."""
    try:
        import matplotlib
    except ImportError:
        print("chart: matplotlib is not installed, skipped", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("val_loss") is not None:
            groups.setdefault((row["text"], row["minutes"]), []).append(row)
    if not groups:
        return
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.2 + 0.35 * max(map(len, groups.values()))
                                                      * len(groups)), squeeze=False)
    colours = {"planned": "tab:green", "defaults": "tab:red"}
    for ax, ((text, minutes), group) in zip(axes[:, 0], groups.items()):
        group = sorted(group, key=lambda r: r["val_loss"])
        ax.barh([label(r) for r in group], [r["val_loss"] for r in group],
                color=[colours.get(r["run"], "tab:blue") for r in group])
        low = min(r["val_loss"] for r in group)
        ax.set_xlim(low - 0.1, max(r["val_loss"] for r in group) + 0.05)
        ax.invert_yaxis()
        ax.set_title(f"{text}, {minutes:g} minutes: validation loss (nats per character)",
                     fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"chart: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
