"""`benchmarks/bench.py`: options, running the registered rows group by group, the report."""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from harness import GROUPS, MODULES, QUICK_WHEN_NAMED, REGISTRY
from harness.common import MODELS, MODES, ROOT, Context, log
from harness.report import loadavg, machine_slug, markdown, write_json

SCHEMA = 1
DESCRIPTION = """The benchmark harness behind the README's performance table.

It measures charrnn side by side with bare PyTorch written in the harness, in one process,
alternating the two (A B A B ...) and reporting medians, because machines are noisy. It prints
a Markdown table on stdout (progress goes to stderr) and writes the same figures as JSON to
benchmarks/results/<machine>-<YYYY-MM-DD>.json (`-quick` added in --quick mode)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small step counts, fewer repeats (a smoke test for CI, < 90 s)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: charrnn.device.available_cores())")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/<machine>-<date>[-quick].json)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated groups to run, of: {', '.join(GROUPS)} (--quick "
                        f"runs {', '.join(QUICK_WHEN_NAMED)} only when named here)")
    p.add_argument("--models", default=None,
                   help=f"training rows: model families (default {','.join(MODELS)})")
    p.add_argument("--hidden", default=None,
                   help="training rows: hidden sizes (default 128,256,512; quick: 128)")
    p.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    p.add_argument("--steps", type=int, default=None,
                   help="override the timed training steps per measurement")
    p.add_argument("--machine", default=None, help="machine name for the JSON file name")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    p.add_argument("--compress-model", default=None, metavar="PATH",
                   help="compress rows: a checkpoint or run folder to measure (default: the "
                        "group trains one, 2 minutes; quick: a few dozen steps)")
    p.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE",
                   help=argparse.SUPPRESS)  # a setting of the mode (common.MODES), e.g. sizes
    args = p.parse_args(argv)
    args.only = _split(args.only, GROUPS, "--only") or [
        g for g in GROUPS if not (args.quick and g in QUICK_WHEN_NAMED)]
    args.settings = _settings(args.settings, p)
    args.models = _split(args.models, MODELS, "--models")
    args.hidden = [int(h) for h in args.hidden.split(",")] if args.hidden else None
    return args


def _settings(items: list[str], parser) -> dict:
    """`--set KEY=VALUE` (VALUE read as YAML): a mode's setting replaced, to try a full-mode
    path at a small size."""
    import yaml
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in MODES["full"]:
            parser.error(f"--set: unknown setting {key!r} (known: {', '.join(MODES['full'])})")
        settings[key] = yaml.safe_load(value)
    return settings


def _split(text, allowed, flag):
    if not text:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"{flag}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), loadavg()
    for name in MODULES:  # each module registers its rows
        importlib.import_module(f"harness.{name}")
    import torch
    import charrnn
    from charrnn.device import available_cores, resolve_device, set_threads

    device = resolve_device(args.device)
    args.device = str(device)
    args.threads = set_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        os.environ["CHARRNN_CACHE_DIR"] = str(Path(tmp) / "cache")  # never ~/.cache
        ctx = Context(args, device, Path(tmp))
        log(f"mode {ctx.mode}, device {device}, {args.threads} thread(s), torch "
            f"{torch.__version__}, groups: {', '.join(args.only)}")
        for group in GROUPS:
            if group in args.only:
                t0 = time.perf_counter()
                for fn in REGISTRY[group]:
                    rows += fn(ctx)
                log(f"{group}: {time.perf_counter() - t0:.1f} s")
    today = _dt.date.today().isoformat()
    machine = args.machine or machine_slug(device)
    report = {
        "schema": SCHEMA, "machine": machine, "date": today,
        "timestamp": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": ctx.mode, "torch": torch.__version__, "charrnn": charrnn.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": args.threads, "cores": available_cores(), "precision": ctx.precision_note,
        "mkldnn_default": bool(torch.backends.mkldnn.is_available()
                               and torch.backends.mkldnn.enabled),
        "settings": dict(ctx.s), "rows_run": args.only,
        "loadavg_start": load_start, "loadavg_end": loadavg(),
        "duration_s": time.perf_counter() - started, "rows": rows,
    }
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results"
        / f"{machine}-{today}{'-quick' if args.quick else ''}.json")
    write_json(report, out)
    print(markdown(report), flush=True)
    log(f"wrote {out}")
    missed = [r["name"] for r in rows if r["met"] is False]
    if missed:
        log(f"targets not met: {', '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
