"""Data-parallel training under torchrun next to one process, at the same global batch.

On the CPU: 2 gloo ranks x 1 thread each against 1 process x 2 threads. On a GPU: world size 1
under torchrun (NCCL, DistributedDataParallel) against the plain command, i.e. what DDP costs.
Both sides are whole `charrnn train` processes (LSTM 2x256, batch 64 x 100); chars/s is the
median of the step windows in their metrics.jsonl after the first (warm-up).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import bench
from harness.common import BATCH, EMBED, LAYERS, SEQ, Context, log, median, row

HIDDEN = 256


def _config(ctx: Context) -> Path:
    import yaml
    cfg = {"data": {"path": str(ctx.train_text), "val_fraction": 0.0},
           "model": {"type": "lstm", "embedding_dim": EMBED, "hidden_size": HIDDEN,
                     "num_layers": LAYERS, "dropout": 0.0},
           "train": {"batch_size": BATCH, "seq_len": SEQ, "max_steps": ctx.s["scaling_steps"],
                     "lr_schedule": "constant", "eval_every": 10 ** 9,
                     "log_every": ctx.s["scaling_steps"] // 5,
                     "device": "cuda" if ctx.cuda else "cpu"}}  # torchrun: cuda:LOCAL_RANK
    path = ctx.tmp / "scaling.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _chars_per_sec(ctx: Context, argv: list[str], threads: int, out: Path) -> float:
    env = dict(ctx.env, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(argv + ["--out", str(out), "--threads", str(threads), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    rates = [json.loads(line)["chars_per_sec"]
             for line in (out / "metrics.jsonl").read_text().splitlines()]
    return median(rates[1:])


@bench("scaling")
def data_parallel(ctx: Context) -> list[dict]:
    """`scaling ...`: torchrun's ranks against one process, the same global batch."""
    repeats = ctx.s["scaling_repeats"]
    if not repeats:
        log("scaling: not in quick mode (run without --quick, e.g. --only scaling)")
        return []
    cfg = str(_config(ctx))
    plain = ctx.charrnn_cmd() + ["train", cfg]

    def torchrun(n: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={n}", "-m", "charrnn", "train", cfg]

    if ctx.cuda:
        name = "scaling torchrun world size 1 (NCCL) / plain command"
        sides = {"torchrun 1 process": (torchrun(1), ctx.threads),
                 "plain command": (plain, ctx.threads)}
    else:
        name = "scaling 2 gloo ranks x 1 thread / 1 process x 2 threads"
        sides = {"2 ranks x 1 thread": (torchrun(2), 1), "1 process x 2 threads": (plain, 2)}
    samples = {side: [] for side in sides}
    for r in range(repeats):  # alternately, as the other rows
        for i, (side, (argv, threads)) in enumerate(sides.items()):
            out = ctx.tmp / f"scaling-{r}-{i}"
            samples[side].append(_chars_per_sec(ctx, argv, threads, out))
    (a_name, a), (b_name, b) = ((side, median(xs)) for side, xs in samples.items())
    log(f"scaling: {a_name} {a:,.0f} chars/s, {b_name} {b:,.0f} chars/s ({a / b:.2f} x)")
    return [row("scaling", name, a, "chars/s", reference=b, reference_name=b_name,
                ratio=a / b, samples=samples, model=f"lstm {LAYERS}x{HIDDEN}", batch=BATCH,
                seq_len=SEQ, steps=ctx.s["scaling_steps"])]
