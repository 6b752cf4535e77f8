#!/usr/bin/env python
"""Seed-to-seed spread of the Tiny Shakespeare quality tests (tests/test_shakespeare.py).

The tests' thresholds are set from this: each setup is trained with several seeds, scored by
`charrnn eval`, and the losses (and the fine-tuning margin) are written as JSON. Loss values do not
depend on the machine's load, only the times do.

    .venv/bin/python benchmarks/shakespeare_noise.py --seeds 1337,1,2 \
        --out benchmarks/results/shakespeare-noise.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
TEXT = ROOT / "data" / "tinyshakespeare.txt"
SMALL = ["--set", "model.hidden_size=128", "--set", "model.embedding_dim=64",
         "--set", "train.batch_size=32", "--set", "train.seq_len=100", "--set", "train.lr=3e-3",
         "--set", "train.warmup_steps=0", "--device", "cpu", "-q"]


def charrnn(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"charrnn {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def eval_loss(run: Path) -> float:
    return json.loads(charrnn("eval", "-c", str(run), "--json"))["loss"]


def two_layer_200_steps(tmp: Path, seed: int) -> float:
    out = tmp / f"two-layer-{seed}"
    charrnn("train", TINY, "--data", str(TEXT), "--out", str(out), "--max-steps", "200",
            "--set", "model.num_layers=2", "--set", "train.eval_every=200",
            "--set", f"train.seed={seed}", *SMALL)
    return eval_loss(out)


def cpu_config_600_steps(tmp: Path, seed: int) -> float:
    out = tmp / f"cpu-{seed}"
    charrnn("train", str(ROOT / "configs" / "shakespeare-cpu.yaml"), "--data", str(TEXT),
            "--out", str(out), "--max-steps", "600", "--set", "train.max_minutes=null",
            "--set", "train.eval_every=600", "--set", f"train.seed={seed}", "-q")
    return eval_loss(out)


def fine_tuning_margin(tmp: Path, seed: int) -> float:
    text = TEXT.read_text(encoding="utf-8")
    first, second = tmp / "first.txt", tmp / "second.txt"
    first.write_text(text[:len(text) // 2], encoding="utf-8")
    second.write_text(text[len(text) // 2:], encoding="utf-8")
    runs = {}
    for name, data, steps, extra in (("base", first, 300, []), ("scratch", second, 150, []),
                                     ("tuned", second, 150, ["--init-from",
                                                             str(tmp / f"base-{seed}")])):
        runs[name] = tmp / f"{name}-{seed}"
        charrnn("train", TINY, "--data", str(data), "--out", str(runs[name]),
                "--max-steps", str(steps), "--set", "train.eval_every=1000",
                "--set", f"train.seed={seed}", *SMALL, *extra)
    return eval_loss(runs["scratch"]) - eval_loss(runs["tuned"])


SETUPS = {"two_layer_200_steps_loss": two_layer_200_steps,
          "cpu_config_600_steps_loss": cpu_config_600_steps,
          "fine_tuning_margin": fine_tuning_margin}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1337,1,2")
    parser.add_argument("--only", default=",".join(SETUPS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            values = {}
            for seed in seeds:
                start = time.perf_counter()
                values[seed] = round(SETUPS[name](Path(tmp), seed), 4)
                print(f"{name} seed {seed}: {values[seed]} ({time.perf_counter() - start:.0f} s)",
                      file=sys.stderr, flush=True)
            spread = list(values.values())
            results[name] = {"by_seed": values, "mean": round(statistics.mean(spread), 4),
                             "stdev": round(statistics.stdev(spread), 4) if len(spread) > 1
                             else None, "min": min(spread), "max": max(spread)}
    report = json.dumps({"seeds": seeds, "results": results}, indent=2)
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
