#!/usr/bin/env python
"""charrnn compress against gzip, bzip2, xz and zstd on one text, with one model.

    .venv/bin/python benchmarks/compression.py -c runs/shakespeare-cpu [TEXT]

TEXT defaults to the held-out tenth of Tiny Shakespeare (its last 111,539 characters, what
`charrnn eval` scores). For each coder: bytes, bits per character, seconds; for charrnn also
the size its eval loss predicts, and a check that decompressing restores the text exactly;
`--adapt` adds a row for `charrnn compress --adapt` (the model learns as it reads).
Run it on an idle machine: the seconds are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
VAL_CHARS = 111_539
BASELINES = {"gzip -9": ["gzip", "-9", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"],
             "xz -9e": ["xz", "-9e", "-c"], "zstd -19 --ultra -22": ["zstd", "--ultra", "-22",
                                                                     "-c", "-q"]}


def timed(cmd: list[str], data: bytes) -> tuple[bytes, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, input=data, capture_output=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.stdout, time.perf_counter() - started


def charrnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "charrnn", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("text", nargs="?", help="default: Tiny Shakespeare's held-out tenth")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--adapt", action="store_true", help="also charrnn compress --adapt")
    args = parser.parse_args()
    text = (Path(args.text).read_text(encoding="utf-8") if args.text
            else SHAKESPEARE.read_text(encoding="utf-8")[-VAL_CHARS:])
    data, chars = text.encode("utf-8"), len(text)
    rows = []
    for name, cmd in BASELINES.items():
        if shutil.which(cmd[0]):
            packed, seconds = timed(cmd, data)
            rows.append({"coder": name, "bytes": len(packed), "seconds": round(seconds, 2)})
    packed, seconds = timed(charrnn("compress", "-c", args.checkpoint, "-q"), data)
    restored, back_seconds = timed(charrnn("decompress", "-c", args.checkpoint, "-q"), packed)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        score = json.loads(subprocess.run(charrnn("eval", "-c", args.checkpoint, fh.name,
                                                  "--json"), capture_output=True, text=True,
                                          check=True).stdout)
    rows.append({"coder": "charrnn compress", "bytes": len(packed), "seconds": round(seconds, 2),
                 "decompress_seconds": round(back_seconds, 2), "exact": restored == data,
                 "eval_predicts_bytes": round(score["loss"] * score["chars"] / math.log(2) / 8)})
    if args.adapt:
        adapted, adapt_seconds = timed(charrnn("compress", "-c", args.checkpoint, "-q",
                                               "--adapt"), data)
        back, adapt_back = timed(charrnn("decompress", "-c", args.checkpoint, "-q"), adapted)
        rows.append({"coder": "charrnn compress --adapt", "bytes": len(adapted),
                     "seconds": round(adapt_seconds, 2), "decompress_seconds": round(adapt_back, 2),
                     "exact": back == data})
    print(f"{chars:,} characters, {len(data):,} bytes; model {args.checkpoint}; load "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| coder | bytes | bits per character | seconds | against charrnn |")
    print("|---|---|---|---|---|")
    ours = next(row["bytes"] for row in rows if row["coder"] == "charrnn compress")
    for row in rows:
        print(f"| {row['coder']} | {row['bytes']:,} | {8 * row['bytes'] / chars:.3f} | "
              f"{row['seconds']:.2f} | {row['bytes'] / ours:.2f} x |")
    static = next(row for row in rows if row["coder"] == "charrnn compress")
    print(f"\ncharrnn: exact round trip {static['exact']}; eval's loss predicts "
          f"{static['eval_predicts_bytes']:,} bytes; decompress {back_seconds:.2f} s; "
          f"{chars / seconds:,.0f} characters/s compressing")
    if args.adapt:
        print(f"charrnn --adapt: exact round trip {rows[-1]['exact']}; "
              f"{1 - rows[-1]['bytes'] / ours:.1%} smaller than static; decompress "
              f"{rows[-1]['decompress_seconds']:.2f} s; {chars / rows[-1]['seconds']:,.0f} "
              f"characters/s compressing")
    if args.out:
        args.out.write_text(json.dumps({"chars": chars, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
