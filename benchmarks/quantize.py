#!/usr/bin/env python
"""What `charrnn export --quantize` costs and saves: file size and eval loss, fp32 / int8 / bf16.

    .venv/bin/python benchmarks/quantize.py -c runs/shakespeare-cpu [--out results.json]

Exports the checkpoint three times (plain, `--quantize int8`, `--quantize bf16`) and evaluates
each file on the run's own validation split (`charrnn eval --json`), one after another on the
CPU. Sizes are bytes on disk; the loss is nats per character. Sampling speed is in `make bench`
(its `sample b1 int8` row), measured beside fp32 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fp32", "int8", "bf16")


def charrnn(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            path = str(Path(tmp) / f"{mode}.pt")
            charrnn("export", args.checkpoint, "-o", path, "-q",
                    *([] if mode == "fp32" else ["--quantize", mode]))
            started = time.perf_counter()
            score = json.loads(charrnn("eval", "-c", path, "--json", "--device", "cpu"))
            rows.append({"mode": mode, "bytes": os.path.getsize(path), "loss": score["loss"],
                         "chars": score["chars"],
                         "eval_seconds": round(time.perf_counter() - started, 1)})
    fp32 = rows[0]
    for row in rows:
        row["size_of_fp32"] = round(row["bytes"] / fp32["bytes"], 3)
        row["loss_minus_fp32"] = round(row["loss"] - fp32["loss"], 6)
    print("| export | bytes | of fp32 | eval loss | minus fp32 |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['bytes']:,} | {row['size_of_fp32']:.3f} | "
              f"{row['loss']:.5f} | {row['loss_minus_fp32']:+.6f} |")
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
