#!/usr/bin/env python
"""Dynamic evaluation (`charrnn eval --adapt`) against static eval, for a grid of settings.

    .venv/bin/python benchmarks/adapt.py -c MODEL [--chars N] [--only LR,DECAY,WINDOW,STREAMS]
                                         [--out FILE.json]

The text is Tiny Shakespeare's held-out tenth (its last 111,539 characters, what `charrnn eval`
scores), or its first N characters (`--chars`, to make a grid affordable). Each row: the
settings, the adapted loss (nats per character), the gain over static eval read the same way
and over eval's own layout (16 streams of 256), and the seconds. The JSON is rewritten after
every row, so a stopped run keeps what it measured. Run it on an idle machine: the seconds are
wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
VAL_CHARS = 111_539
# (lr, decay, window, streams)
GRID = [(0.03, 0.0, 50, 1), (0.1, 0.0, 50, 1), (0.2, 0.0, 50, 1), (0.1, 0.001, 50, 1),
        (0.1, 0.01, 50, 1), (0.1, 0.0, 100, 1), (0.1, 0.0, 25, 1), (0.1, 0.0, 50, 4)]


def main() -> None:
    import torch

    from charrnn.analysis.adapt import AdaptSettings
    from charrnn.cli.common import load_model
    from charrnn.analysis.evaluate import adapted_summary, stream_loss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--chars", type=int, help="score only the held-out tenth's first N")
    parser.add_argument("--only", action="append", default=[],
                        help="LR,DECAY,WINDOW,STREAMS instead of the grid (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = [tuple(float(v) if i < 2 else int(v) for i, v in enumerate(s.split(",")))
            for s in args.only] or GRID
    loaded = load_model(args.checkpoint, "cpu")
    text = SHAKESPEARE.read_text(encoding="utf-8")[-VAL_CHARS:][:args.chars]
    ids = loaded.vocab.encode(text)
    cpu = torch.device("cpu")
    started = time.perf_counter()
    static, chars = stream_loss(loaded.model, ids, cpu)  # eval's layout: 16 streams of 256
    static_seconds = time.perf_counter() - started
    result = {"checkpoint": str(args.checkpoint), "chars": len(text), "threads": args.threads,
              "static": {"loss": static, "chars": chars, "seconds": round(static_seconds, 2)},
              "static_by_layout": {}, "rows": [], "load_at_start": os.getloadavg()[0]}
    print(f"{len(text):,} characters; static eval (16 x 256) {static:.4f} nats/char in "
          f"{static_seconds:.1f} s", flush=True)
    for lr, decay, window, streams in grid:
        if str(streams) not in result["static_by_layout"]:  # static, read as adapt reads
            result["static_by_layout"][str(streams)] = stream_loss(
                loaded.model, ids, cpu, streams=streams, seq_len=256)[0]
        settings = AdaptSettings(lr=lr, decay=decay, window=window, streams=streams)
        row = adapted_summary(loaded.model, ids, cpu, settings)
        row["gain"] = static - row["loss"]
        row["gain_same_streams"] = result["static_by_layout"][str(streams)] - row["loss"]
        row["load"] = os.getloadavg()[0]
        result["rows"].append(row)
        print(f"lr {lr:g} decay {decay:g} window {window} streams {streams}: "
              f"{row['loss']:.4f} (gain {row['gain']:.4f}; "
              f"{row['gain_same_streams']:.4f} over static with the same streams) "
              f"{row['seconds']:.1f} s", flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
