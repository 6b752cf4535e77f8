"""Corpus loading: `load_corpus` of a generated text in a fresh process, with an empty cache.

Rows: first-load speed, cached-load time, the time a cached `charrnn train` command takes from
its start to its first step (next to the same command on a tiny text), and the peak and held
memory per character, measured from /proc/self/status (the peak VmHWM is reset to the current
RSS first, through /proc/self/clear_refs, so it is the load's own; a tiny load first pays
torch's fixed start-up costs). An ASCII text, and a UTF-8 text whose vocab is
about 5,000 characters (2-byte ids), where loading may take at most 3 bytes per character.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import bench
from harness.common import ROOT, Context, log, median, row, write_text

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out
import os, tempfile, torch
from charrnn.text.data import load_corpus
with tempfile.TemporaryDirectory() as tmp:  # torch's first operations cost a fixed few MB:
    warm = os.path.join(tmp, "warm.txt")    # not a cost per character of a corpus
    with open(warm, "w", encoding="utf-8") as fh:
        fh.write("".join(chr(0x4E00 + i) for i in range(300)) + "warm-up\n")
    load_corpus(warm, 0.1)
try:  # reset the peak (VmHWM) to the current RSS, so the peak is the load's own
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
before = status()
t0 = time.perf_counter()
corpus = load_corpus(sys.argv[1], 0.1)
seconds = time.perf_counter() - t0
after = status()
print(json.dumps({"seconds": seconds, "chars": len(corpus.ids), "cached": corpus.cached,
                  "vocab": len(corpus.vocab), "itemsize": corpus.ids.element_size(),
                  "rss_before": before.get("VmRSS"), "hwm_before": before.get("VmHWM"),
                  "rss_after": after.get("VmRSS"), "hwm_after": after.get("VmHWM"),
                  "hwm_reset": reset}))
"""


def _load_child(ctx: Context, path: Path, cache: Path) -> dict:
    env = dict(ctx.env, CHARRNN_CACHE_DIR=str(cache))
    res = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(ROOT)], env=env,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"corpus load subprocess failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _per_char(run: dict, end: str):
    if run.get(end) is None or run.get("rss_before") is None:
        return None  # this kernel's /proc/self/status lacks VmRSS / VmHWM
    return (run[end] - run["rss_before"]) / run["chars"]


@contextlib.contextmanager
def _loaded_twice(ctx: Context, name: str, wide: bool):
    """First and cached load of a generated text of `load_mb` MB: yields (first, second, size,
    text path, cache folder); the text and the cache are removed afterwards."""
    size = ctx.s["load_mb"] * 1_000_000
    t0 = time.perf_counter()
    path = write_text(ctx.tmp / f"{name}.txt", size, seed=5, wide=wide)
    size = path.stat().st_size
    log(f"load: wrote {size / 1e6:.0f} MB of generated {name} text in "
        f"{time.perf_counter() - t0:.1f} s")
    cache = ctx.tmp / f"cache-{name}"
    try:
        first, second = _load_child(ctx, path, cache), _load_child(ctx, path, cache)
        log(f"load {name}: first {first['seconds']:.2f} s ({first['chars']:,} chars, vocab "
            f"{first['vocab']}), cached {second['seconds']:.2f} s (cache hit: "
            f"{second['cached']})")
        yield first, second, size, path, cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        path.unlink()


def seconds_to_first_step(argv: list[str], metrics: Path, env: dict, expect: str = "",
                          timeout: float = 300.0) -> float:
    """Wall time of the command `argv` from its start until `metrics` (its metrics.jsonl) holds
    a first line, i.e. its first training step is logged; the process is then killed. Its
    stderr must hold `expect`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = None
    try:
        while seconds is None and time.perf_counter() - t0 < timeout:
            if metrics.exists() and metrics.read_bytes().strip():
                seconds = time.perf_counter() - t0
            elif proc.poll() is not None:
                break
            else:
                time.sleep(0.005)
    finally:
        proc.kill()
        err = proc.communicate()[1].decode(errors="replace")
    if seconds is None:
        raise RuntimeError(f"{' '.join(argv)}: no step logged (exit code {proc.returncode}):"
                           f"\n{err}")
    if expect not in err:
        raise RuntimeError(f"{' '.join(argv)}: {expect!r} not in its log:\n{err}")
    return seconds


def _first_step_argv(ctx: Context, text: Path, out: Path) -> list[str]:
    """`charrnn train` of a tiny model on `text`: start-up, corpus load, one logged step."""
    import yaml
    cfg = {"data": {"path": str(text), "val_fraction": 0.1},
           "model": {"type": "lstm", "embedding_dim": 16, "hidden_size": 32, "num_layers": 1},
           "train": {"batch_size": 4, "seq_len": 16, "max_steps": 10 ** 6, "log_every": 1,
                     "eval_every": 10 ** 9, "save_every": 10 ** 9}}
    path = ctx.tmp / "first-step.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return ctx.charrnn_cmd() + ["train", str(path), "--out", str(out),
                                "--threads", str(ctx.threads), "--device", ctx.args.device]


def _first_step_times(ctx: Context, text: Path, cache: Path) -> tuple[list, list, int]:
    """Seconds to the first step of `charrnn train` on `text` (its cache already written) and,
    alternately, on a tiny text: the corpus' share of a second run's start."""
    tiny = write_text(ctx.tmp / "tiny.txt", 20_000, seed=6)
    env = dict(ctx.env, CHARRNN_CACHE_DIR=str(cache))
    got = {"big": [], "tiny": []}
    for r in range(ctx.s["startup_repeats"]):
        for side, path in (("big", text), ("tiny", tiny)):
            out = ctx.tmp / f"first-step-{side}-{r}"
            got[side].append(seconds_to_first_step(  # the big text's ids from the cache
                _first_step_argv(ctx, path, out), out / "metrics.jsonl", env,
                expect="(cached)" if side == "big" else ""))
    log(f"load: cached train command to its first step {median(got['big']):.2f} s, on a "
        f"20 KB text {median(got['tiny']):.2f} s")
    return got["big"], got["tiny"], tiny.stat().st_size


def _linux() -> bool:
    if Path("/proc/self/status").exists():
        return True
    log("load: /proc/self/status is missing (not Linux); skipped")
    return False


@bench("load")
def load_ascii(ctx: Context) -> list[dict]:
    """`load first`, `load cached`, `load cached: train to first step`, `load peak memory`,
    `load held memory` (ASCII text)."""
    if not _linux():
        return []
    with _loaded_twice(ctx, "ascii", wide=False) as (first, second, size, path, cache):
        big, tiny, tiny_size = _first_step_times(ctx, path, cache)
    note = "the text was just written, so it is read from the page cache"
    return [
        row("load", f"load first ({size / 1e6:.0f} MB)", size / 1e6 / first["seconds"], "MB/s",
            target=(">=", 50.0), target_on="value", seconds=first["seconds"],
            chars=first["chars"], note=note, raw=first),
        row("load", "load cached", second["seconds"], "s", target=("<", 1.0),
            target_on="value", cache_hit=second["cached"], raw=second,
            note="load_corpus alone, timed inside a fresh process"),
        row("load", f"load cached: train to first step ({size / 1e6:.0f} MB)", median(big),
            "s", reference=median(tiny), reference_name=f"same, {tiny_size / 1e3:.0f} KB text",
            ratio=median(big) / median(tiny), samples={"charrnn": big, "reference": tiny},
            note="whole `charrnn train` processes, from their start until metrics.jsonl "
                 "holds the first step (tiny LSTM, batch 4 x 16)"),
        row("load", "load peak memory", _per_char(first, "hwm_after"), "B/char",
            target=("<", 3.0), target_on="value", hwm_reset=first["hwm_reset"],
            cached_load=_per_char(second, "hwm_after")),
        row("load", "load held memory", _per_char(first, "rss_after"), "B/char",
            target=("<", 1.5), target_on="value", cached_load=_per_char(second, "rss_after")),
    ]


@bench("load")
def load_utf8_large_vocab(ctx: Context) -> list[dict]:
    """`load peak memory (UTF-8, ...)`: a text of 3-byte characters, about 5,000 of them."""
    if not _linux():
        return []
    with _loaded_twice(ctx, "utf-8", wide=True) as (first, _, size, *_):
        pass  # the first load is all this row needs
    return [row("load", f"load peak memory (UTF-8, {first['vocab']:,}-char vocab)",
                _per_char(first, "hwm_after"), "B/char", target=("<=", 3.0),
                target_on="value", ids_bytes_per_char=first["itemsize"],
                bytes_per_char=size / first["chars"], mb=size / 1e6,
                seconds=first["seconds"], hwm_reset=first["hwm_reset"], raw=first)]
