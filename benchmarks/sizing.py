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
    .venv/bin/python benchmarks/sizing.py                    # a few hours
    .venv/bin/python benchmarks/sizing.py --texts shakespeare-50k --minutes 2 --grid small
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
    "python-stdlib-all": lambda tmp: str(Path(sysconfig.get_paths()["stdlib"]) / "**" / "*.py"),
}
GRIDS = {  # (layers, hidden, batch, dropout) tried beside the plan and the defaults
    "small": [(1, 128, 16, 0.0), (2, 128, 16, 0.3), (2, 256, 16, 0.3)],
    # dropout against the model's size at one budget (the planner's dropout rule)
    "dropout": [(1, 128, 16, 0.0), (1, 256, 16, 0.0), (1, 256, 16, 0.1), (2, 128, 16, 0.3),
                (2, 256, 16, 0.0), (2, 256, 16, 0.3)],
    "dropout-wide": [(1, 256, 16, 0.2), (1, 256, 16, 0.3)],
    "full": [(layers, hidden, batch, dropout)
             for layers, hidden in ((1, 128), (2, 128), (2, 256), (2, 512), (3, 512))
             for batch in (16, 64) for dropout in (0.0, 0.3)],
}
QUICK = {"texts": ["licences", "shakespeare"], "minutes": [1.0], "grid": "small"}
FULL = {"texts": list(TEXTS), "minutes": [2.0, 10.0], "grid": "full"}


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
    parser.add_argument("--out", type=Path, help="the JSON table (default: under "
                                                 "benchmarks/results/)")
    args = parser.parse_args()
    mode = dict(QUICK if args.quick else FULL)
    if args.texts:
        mode["texts"] = args.texts.split(",")
    if args.minutes:
        mode["minutes"] = [float(m) for m in args.minutes.split(",")]
    if args.grid:
        mode["grid"] = args.grid
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"sizing-{'quick-' if args.quick else ''}{time.strftime('%Y-%m-%d')}.json")
    rows = []
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_before": os.getloadavg(), "mode": mode, "rows": rows}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for name in mode["texts"]:
            text = TEXTS[name](tmp)
            if text is None:
                print(f"{name}: not on this machine, skipped", file=sys.stderr)
                continue
            for minutes in mode["minutes"]:
                runs = ([] if args.grid_only else
                        [("planned", []), ("defaults", ["--set", "train.plan=false"])])
                runs += [(f"{l}x{h} b{b} d{d}", grid_sets(l, h, b, d))
                         for l, h, b, d in GRIDS[mode["grid"]]]
                for label, sets in runs:
                    row = {"text": name, "minutes": minutes, "run": label,
                           **trial(text, minutes, tmp / "run", sets),
                           "load": os.getloadavg()[0]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(summary(rows))
    print(f"table: {out}", file=sys.stderr)


def summary(rows: list[dict]) -> str:
    """Per text and budget: the planned run, the defaults and the best of the grid."""
    lines = ["| text | minutes | planned | defaults | best of the grid | its run |",
             "|---|---|---|---|---|---|"]
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
        lines.append(f"| {text} | {minutes:g} | {fmt('planned')} | {fmt('defaults')} | "
                     f"{best_loss} | {best['run']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
