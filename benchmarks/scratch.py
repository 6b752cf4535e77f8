#!/usr/bin/env python
"""The plan of `charrnn compress --scratch`: which model, batch and learning rate code a text
best when the model starts from nothing and learns as it reads (one pass).

    .venv/bin/python benchmarks/scratch.py --grid          # estimates for the PLANS below
    .venv/bin/python benchmarks/scratch.py --real          # the default plan, really coded

--grid scores each plan the fast way: the text in the same streams and windows, each window
scored by the fused forward and then learnt from (what the coder does, up to float rounding,
without coding). --real compresses and decompresses with `charrnn.analysis.compress` and
checks the round trip. Both print bits per character and seconds, and write JSON rows to
benchmarks/results/ (or --out). Run on an idle machine: the seconds are wall-clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
# what every plan below shares, and the plans tried (each key not named here or there:
# ScratchPlan's default), in the order they were run
PLAN_BASE = dict(family="lstm", embedding_dim=32, num_layers=1, optimizer="adam", beta1=0.9,
                 beta2=0.999, grad_clip=5.0, seed=0)
PLANS = [dict(hidden_size=128, streams=8, window=16, lr=4e-3),
         dict(hidden_size=128, streams=8, window=16, lr=8e-3),
         dict(hidden_size=128, streams=4, window=16, lr=4e-3),
         dict(hidden_size=256, streams=8, window=16, lr=3e-3),
         dict(hidden_size=128, streams=16, window=16, lr=8e-3),
         dict(hidden_size=256, streams=4, window=16, lr=2e-3),
         dict(hidden_size=128, streams=8, window=32, lr=8e-3),
         dict(hidden_size=512, streams=8, window=16, lr=2e-3),
         dict(hidden_size=256, streams=8, window=32, lr=3e-3),
         dict(hidden_size=256, streams=8, window=16, lr=2e-3, embedding_dim=64)]


def estimate(text: str, plan) -> dict:
    """Bits per character of one pass in the coder's layout, scored by fused windows."""
    import torch

    from charrnn.analysis.adapt import window_losses
    from charrnn.analysis.compress import stream_layout
    from charrnn.analysis.scratch import Learner
    from charrnn.models.family import map_hidden
    from charrnn.text.vocab import Vocab

    vocab = Vocab.from_text(text)
    learner = Learner(plan, len(vocab))
    streams, length = stream_layout(len(text), plan.streams)
    ids = torch.zeros(streams * length, dtype=torch.long)
    ids[:len(text)] = vocab.encode(text)  # the whole buffer at once
    ids = ids.view(streams, length)
    keep_all = torch.ones(streams, plan.window, dtype=torch.bool)
    keep_all[-1] = False  # the last row may be short: leave it out of the estimate
    started, total, count, hidden = time.perf_counter(), 0.0, streams, None
    for start in range(0, length - 1, plan.window):
        x, y = ids[:, start:start + plan.window], ids[:, start + 1:start + plan.window + 1]
        x = x[:, :y.size(1)]
        keep = keep_all[:, :y.size(1)]
        with torch.no_grad():
            logits, after = learner.model(x, hidden)
            losses = window_losses(logits, y, keep)
            total += losses.sum().item()
            count += losses.numel()
        learner.learn_window(x, y, hidden, keep)
        hidden = map_hidden(torch.Tensor.detach, after)
    first = streams * math.log(len(vocab) + 1)  # each stream's first character: uniform
    return {"bpc": (total + first) / (count) / math.log(2),
            "seconds": round(time.perf_counter() - started, 1)}


def real(text: str, plan) -> dict:
    from charrnn.analysis.compress import compress, decompress
    data = text.encode("utf-8")
    started = time.perf_counter()
    blob = compress(data, scratch=plan)
    middle = time.perf_counter()
    back = decompress(blob)
    return {"bytes": len(blob), "bpc": 8 * len(blob) / len(text), "exact": back == data,
            "seconds": round(middle - started, 1),
            "decompress_seconds": round(time.perf_counter() - middle, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", type=Path, default=SHAKESPEARE)
    parser.add_argument("--chars", type=int, default=None, help="only the first N characters")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a plan key for --real (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    from charrnn.analysis.scratch import ScratchPlan
    torch.set_num_threads(1)  # as the coder
    text = args.text.read_text(encoding="utf-8")[:args.chars]
    rows = []
    if args.grid:
        for fields in PLANS:
            plan = ScratchPlan(**{**PLAN_BASE, **fields})
            rows.append({"how": "estimate", **dataclasses.asdict(plan), **estimate(text, plan)})
            print(json.dumps(rows[-1]), flush=True)
    if args.real:
        sets = dict(item.split("=", 1) for item in args.set)
        fields = {f.name: f.type for f in dataclasses.fields(ScratchPlan)}
        plan = ScratchPlan(**{k: (int(v) if fields[k] in ("int", int) else
                                  float(v) if fields[k] in ("float", float) else v)
                              for k, v in sets.items()})
        rows.append({"how": "compress", **dataclasses.asdict(plan), **real(text, plan)})
        print(json.dumps(rows[-1]), flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"scratch-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"text": str(args.text.name), "chars": len(text),
                               "loadavg": os.getloadavg(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
