"""Whole processes: start-up time of `charrnn --help` and `charrnn sample --length 1`, and the
peak resident memory of a short `charrnn train` (group `memory`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness import bench
from harness.common import BATCH, EMBED, LAYERS, SEQ, Context, log, median, row


def _small_checkpoint(ctx: Context) -> Path:
    from charrnn.config import config_from_dict
    from charrnn.training.loop import train

    out = ctx.tmp / "small-run"
    cfg = config_from_dict({
        "data": {"path": str(ctx.train_text), "val_fraction": 0.0},
        "model": {"type": "lstm", "embedding_dim": 16, "hidden_size": 32, "num_layers": 1},
        "train": {"batch_size": 4, "seq_len": 16, "max_steps": 2, "eval_every": 10 ** 9,
                  "device": "cpu", "threads": ctx.threads, "out_dir": str(out)}}, "bench")
    train(cfg, run_dir=str(out))
    return out / "last.pt"


def _time_process(argv: list[str], env: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             timeout=300)
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}:\n"
                               f"{res.stderr.decode(errors='replace')}")
    return times


@bench("startup")
def startup_times(ctx: Context) -> list[dict]:
    """`startup charrnn --help` and `startup charrnn sample --length 1`: medians of runs."""
    exe, n = ctx.charrnn_cmd(), ctx.s["startup_repeats"]
    ckpt = _small_checkpoint(ctx)
    _time_process(exe + ["--help"], ctx.env, 1)  # warm the file cache
    helps = _time_process(exe + ["--help"], ctx.env, n)
    samples = _time_process(exe + ["sample", "--length", "1", "--checkpoint", str(ckpt),
                             "--device", ctx.args.device, "--seed", "1"], ctx.env, n)
    log(f"startup: --help {median(helps):.3f} s, sample {median(samples):.3f} s")
    return [row("startup", "startup charrnn --help", median(helps), "s", target=("<", 0.3),
                target_on="value", samples={"charrnn": helps}, command=" ".join(exe)),
            row("startup", "startup charrnn sample --length 1", median(samples), "s",
                samples={"charrnn": samples}, checkpoint="lstm 1x32")]


@bench("memory")
def train_peak_memory(ctx: Context) -> list[dict]:
    """`memory train h512`: peak RSS of a short `charrnn train` subprocess, from os.wait4."""
    import yaml

    steps = ctx.s["memory_steps"]
    cfg = {"data": {"path": str(ctx.train_text), "val_fraction": 0.0},
           "model": {"type": "lstm", "embedding_dim": EMBED, "hidden_size": 512,
                     "num_layers": LAYERS, "dropout": 0.0},
           "train": {"batch_size": BATCH, "seq_len": SEQ, "max_steps": steps,
                     "eval_every": 10 ** 9, "log_every": 1}}
    cfg_path = ctx.tmp / "memory.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    argv = ctx.charrnn_cmd() + ["train", str(cfg_path), "--out", str(ctx.tmp / "memory-run"),
                                "--quiet", "--threads", str(ctx.threads),
                                "--device", ctx.args.device]
    err = ctx.tmp / "memory.stderr"
    t0 = time.perf_counter()
    with open(err, "wb") as fh:
        proc = subprocess.Popen(argv, env=ctx.env, stdout=subprocess.DEVNULL, stderr=fh)
        # wait4: the rusage of this child alone (RUSAGE_CHILDREN would mix in earlier ones)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"charrnn train exited {proc.returncode}:\n{err.read_text()}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak_mb = usage.ru_maxrss * scale / 1e6
    log(f"memory: charrnn train h512, {steps} steps: peak RSS {peak_mb:.0f} MB "
        f"({seconds:.1f} s)")
    return [row("memory", "memory train h512 (peak RSS)", peak_mb, "MB", steps=steps,
                seconds=seconds, model=f"lstm {LAYERS}x512", batch=BATCH, seq_len=SEQ)]
