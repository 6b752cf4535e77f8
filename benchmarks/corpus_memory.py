"""Memory per character of a large non-ASCII corpus: loading it, and `charrnn train` on it.

Writes a text of N characters drawn from 5,000 CJK code points (3 bytes each in UTF-8) and a few
ASCII ones (a vocab of about 5,050, so 2-byte ids), and the same kind of text of `--small`
characters. Each command runs in a fresh process; its peak RSS comes from wait4 (ru_maxrss).
The cost per character is (peak on the large text - peak on the small one) / (N - small), so
torch's and the model's fixed costs cancel out. Rows:

- load:  `load_corpus(path)` alone
- train: `charrnn train configs/tiny.yaml --data TEXT --set train.max_steps=1` (one step, its
         evaluation and checkpoint), without the corpus cache (CHARRNN_CACHE_MAX_MB=0). The
         evaluation reads 4 windows of the validation split (train.eval_batches=4): its memory
         is that of one window however many it reads, and the whole split of 2 M characters
         would take minutes with a 5,050-character vocab on a CPU.

    python benchmarks/corpus_memory.py                       # 20 M characters (60 MB): heavy
    python benchmarks/corpus_memory.py --chars 2000000 --json out.json

The default run's output is kept in benchmarks/results/corpus-memory-*.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CJK = [chr(0x4E00 + i) for i in range(5000)]
ASCII = [chr(c) for c in range(0x21, 0x21 + 48)]  # with CJK, "\n" and " ": 5,050 characters
BLOCK_CHARS = 1 << 20
TARGET = 3.0  # bytes per character, for the whole train command


def write_text(path: Path, chars: int, seed: int = 0) -> Path:
    """`chars` characters: lines of about 40 CJK characters, a few ASCII ones among them."""
    rng = random.Random(seed)
    alphabet = CJK * 20 + ASCII + [" "] * 40  # ASCII and spaces: rare, but all present
    block = rng.choices(alphabet, k=min(chars, BLOCK_CHARS))
    for i in range(39, len(block), 40):
        block[i] = "\n"
    block[:len(ASCII)] = ASCII  # every character of the vocab, even in a small text
    text = "".join(block)
    with open(path, "w", encoding="utf-8") as fh:
        left, k = chars, 0
        while left > 0:  # rotations of one block: a long text without a long generation
            shift = (k * 7919) % len(text)
            piece = (text[shift:] + text[:shift])[:left]
            fh.write(piece)
            left -= len(piece)
            k += 1
    return path


_LOAD = "import sys; from charrnn.text.data import load_corpus; load_corpus(sys.argv[1], 0.1)"


def peak_rss(args: list[str], env: dict) -> tuple[int, float]:
    """Peak RSS in bytes (ru_maxrss of this child alone, from wait4) and wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{err.decode()}")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0  # ru_maxrss is in KiB on Linux


def commands(text: Path, run_dir: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "load": [py, "-c", _LOAD, str(text)],
        "train": [py, "-m", "charrnn", "train", str(ROOT / "configs" / "tiny.yaml"),
                  "--data", str(text), "--out", str(run_dir), "--force", "--quiet",
                  "--threads", "1", "--set", "train.max_steps=1", "--set", "train.eval_batches=4"],
    }


def measure(chars: int, small: int, tmp: Path, which=("load", "train")) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CHARRNN_CACHE_DIR": str(tmp / "cache"), "CHARRNN_CACHE_MAX_MB": "0"}
    texts = {n: write_text(tmp / f"text-{n}.txt", n, seed=1) for n in (small, chars)}
    result = {"chars": chars, "small_chars": small, "utf8_bytes": texts[chars].stat().st_size,
              "rows": {}}
    for name in which:
        peaks = {}
        for n, path in texts.items():
            peaks[n] = peak_rss(commands(path, tmp / f"run-{n}")[name], env)
        per_char = (peaks[chars][0] - peaks[small][0]) / (chars - small)
        result["rows"][name] = {"bytes_per_char": per_char,
                                "peak_small_mb": peaks[small][0] / 1e6,
                                "peak_large_mb": peaks[chars][0] / 1e6,
                                "seconds_large": peaks[chars][1]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=20_000_000)
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.chars, args.small, Path(tmp))
    print(f"text: {result['chars']:,} characters ({result['utf8_bytes'] / 1e6:.1f} MB of "
          f"UTF-8) against {result['small_chars']:,}; peak RSS per character:")
    for name, row in result["rows"].items():
        print(f"  {name:<6} {row['bytes_per_char']:6.2f} B/char   (peaks {row['peak_small_mb']:.0f}"
              f" MB and {row['peak_large_mb']:.0f} MB; {row['seconds_large']:.1f} s)")
    train = result["rows"]["train"]["bytes_per_char"]
    print(f"target: train at most {TARGET} B/char: {'met' if train <= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
