"""Corpus loading: `load_corpus` of a generated text in a fresh process, with an empty cache.

Rows: first-load speed, cached-load time, and the peak and held memory per character, measured
from /proc/self/status (the peak VmHWM is reset to the current RSS first, through
/proc/self/clear_refs, so it is the load's own; a tiny load first pays torch's fixed start-up
costs). An ASCII text, and a UTF-8 text whose vocab is
about 5,000 characters (2-byte ids), where loading may take at most 3 bytes per character.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import bench
from harness.common import ROOT, Context, log, row, write_text

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
from charrnn.data import load_corpus
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


def _load_twice(ctx: Context, name: str, wide: bool) -> tuple[dict, dict, int]:
    """First and cached load of a generated text of `load_mb` MB."""
    size = ctx.s["load_mb"] * 1_000_000
    t0 = time.perf_counter()
    path = write_text(ctx.tmp / f"{name}.txt", size, seed=5, wide=wide)
    size = path.stat().st_size
    log(f"load: wrote {size / 1e6:.0f} MB of generated {name} text in "
        f"{time.perf_counter() - t0:.1f} s")
    cache = ctx.tmp / f"cache-{name}"
    first, second = _load_child(ctx, path, cache), _load_child(ctx, path, cache)
    shutil.rmtree(cache, ignore_errors=True)
    path.unlink()
    log(f"load {name}: first {first['seconds']:.2f} s ({first['chars']:,} chars, vocab "
        f"{first['vocab']}), cached {second['seconds']:.2f} s (cache hit: {second['cached']})")
    return first, second, size


def _linux() -> bool:
    if Path("/proc/self/status").exists():
        return True
    log("load: /proc/self/status is missing (not Linux); skipped")
    return False


@bench("load")
def load_ascii(ctx: Context) -> list[dict]:
    """`load first`, `load cached`, `load peak memory`, `load held memory` (ASCII text)."""
    if not _linux():
        return []
    first, second, size = _load_twice(ctx, "ascii", wide=False)
    note = "the text was just written, so it is read from the page cache"
    return [
        row("load", f"load first ({size / 1e6:.0f} MB)", size / 1e6 / first["seconds"], "MB/s",
            target=(">=", 50.0), target_on="value", seconds=first["seconds"],
            chars=first["chars"], note=note, raw=first),
        row("load", "load cached", second["seconds"], "s", target=("<", 1.0),
            target_on="value", cache_hit=second["cached"], raw=second),
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
    first, _, size = _load_twice(ctx, "utf-8", wide=True)
    return [row("load", f"load peak memory (UTF-8, {first['vocab']:,}-char vocab)",
                _per_char(first, "hwm_after"), "B/char", target=("<=", 3.0),
                target_on="value", ids_bytes_per_char=first["itemsize"],
                bytes_per_char=size / first["chars"], mb=size / 1e6,
                seconds=first["seconds"], hwm_reset=first["hwm_reset"], raw=first)]
