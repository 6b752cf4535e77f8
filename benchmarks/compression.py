#!/usr/bin/env python
"""charrnn compress against gzip, bzip2, xz and zstd on one text, with one model.

    .venv/bin/python benchmarks/compression.py -c runs/shakespeare-cpu [TEXT]

TEXT defaults to the held-out tenth of Tiny Shakespeare (its last 111,539 characters, what
`charrnn eval` scores). For each coder: bytes, bits per character, seconds; for charrnn also
the size its eval loss predicts, and a check that decompressing restores the text exactly;
`--adapt` adds a row for `charrnn compress --adapt` (the model learns as it reads).
Run it on an idle machine: the seconds are wall-clock. The measurements are those of the
benchmark harness's `compress` group (harness/compress.py).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from harness.compress import (SHAKESPEARE, VAL_CHARS, baselines, charrnn_round_trip, eval_score,
                              predicted_bytes)


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
    rows = [{"coder": name, **r} for name, r in baselines(data).items()]
    static = {"coder": "charrnn compress", **charrnn_round_trip(args.checkpoint, data),
              "eval_predicts_bytes": predicted_bytes(eval_score(args.checkpoint, text))}
    rows.append(static)
    if args.adapt:
        rows.append({"coder": "charrnn compress --adapt",
                     **charrnn_round_trip(args.checkpoint, data, "--adapt")})
    print(f"{chars:,} characters, {len(data):,} bytes; model {args.checkpoint}; load "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| coder | bytes | bits per character | seconds | against charrnn |")
    print("|---|---|---|---|---|")
    ours = static["bytes"]
    for row in rows:
        print(f"| {row['coder']} | {row['bytes']:,} | {8 * row['bytes'] / chars:.3f} | "
              f"{row['seconds']:.2f} | {row['bytes'] / ours:.2f} x |")
    print(f"\ncharrnn: exact round trip {static['exact']}; eval's loss predicts "
          f"{static['eval_predicts_bytes']:,} bytes; decompress "
          f"{static['decompress_seconds']:.2f} s; {chars / static['seconds']:,.0f} "
          f"characters/s compressing")
    if args.adapt:
        print(f"charrnn --adapt: exact round trip {rows[-1]['exact']}; "
              f"{1 - rows[-1]['bytes'] / ours:.1%} smaller than static; decompress "
              f"{rows[-1]['decompress_seconds']:.2f} s; {chars / rows[-1]['seconds']:,.0f} "
              f"characters/s compressing")
    if args.out:
        args.out.write_text(json.dumps({"chars": chars, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
