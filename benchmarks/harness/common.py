"""What every benchmark group shares: the run's Context, result rows, generated text, the bare
PyTorch model the loops are compared with, and timing."""

from __future__ import annotations

import os
import random
import statistics
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("lstm", "gru", "rnn")

# Shapes of the comparisons: 2 layers, embedding 64, batch 64, seq_len 100.
EMBED, LAYERS, BATCH, SEQ = 64, 2, 64, 100
LR, GRAD_CLIP, TEMPERATURE, PRIME = 2.0e-3, 5.0, 0.8, "The "
SAMPLE_HIDDEN = 256  # the sampling / eval model: LSTM 2x256
TRAIN_CORPUS_BYTES = 700_000  # below charrnn's 1 MiB cache threshold: plain read every time

MODES = {
    "quick": {"hidden": [128], "warmup": 2, "timed_s": 0.6, "min_steps": 4, "repeats": 2,
              "sample_len_1": 300, "sample_len_32": 300, "sample_repeats": 3,
              "eval_chars": 60_000, "eval_repeats": 2, "load_mb": 20, "startup_repeats": 3,
              "memory_steps": 2, "scaling_steps": 0, "scaling_repeats": 0,
              "compress_minutes": 0, "compress_small_steps": 40, "compress_chars": 20_000,
              "compress_repeats": 1, "compress_adapt": False,
              "compress_roundtrip_bytes": 200_000, "compress_roundtrip_streams": 1024,
              "scratch_chars": 20_000},
    "full": {"hidden": [128, 256, 512], "warmup": 3, "timed_s": 3.0, "min_steps": 8,
             "repeats": 5, "sample_len_1": 2000, "sample_len_32": 1000, "sample_repeats": 5,
             "eval_chars": 1_000_000, "eval_repeats": 2, "load_mb": 100, "startup_repeats": 5,
             "memory_steps": 5, "scaling_steps": 30, "scaling_repeats": 2,
             # compress_minutes: the model the bench trains (0: the small model of
             # compress_small_steps steps, which the large round trip always uses)
             "compress_minutes": 2, "compress_small_steps": 40, "compress_chars": 111_539,
             "compress_repeats": 2, "compress_adapt": True,
             "compress_roundtrip_bytes": 10_000_000, "compress_roundtrip_streams": 1024,
             "scratch_chars": None},  # None: the whole file
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


def row(group: str, name: str, value, unit: str, *, reference=None, reference_name=None,
        ratio=None, target=None, target_on="ratio", samples=None, **extra) -> dict:
    """One result. `target` is (op, number) checked against the ratio or the value."""
    met = None
    if target is not None:
        got = ratio if target_on == "ratio" else value
        op, bound = target
        if got is not None:
            met = bool({">=": got >= bound, "<=": got <= bound, "<": got < bound}[op])
    spread = None
    runs = [xs for xs in (samples or {}).values() if len(xs) > 1 and min(xs) > 0]
    if runs:  # the widest max/min - 1 over the sides' repeats: how noisy the machine was
        spread = max(max(xs) / min(xs) - 1 for xs in runs)
    return {"group": group, "name": name, "value": value, "unit": unit,
            "reference": reference, "reference_name": reference_name, "ratio": ratio,
            "target": None if target is None else {"op": target[0], "value": target[1],
                                                     "on": target_on},
            "met": met, "samples": samples or {}, "spread": spread, **extra}


# ------------------------------------------------------------------------------ generated text

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "da", "fo", "gu", "ha", "je",
              "qu", "wy", "xe", "zo", "th", "sh", "ch", "st", "an", "er", "in", "on", "ou", "ea",
              "pl", "gr", "ck", "ng")
_PUNCT = (",", ".", ";", ":", "!", "?", "'s", "-")
ALPHABET = string.ascii_letters + " \n" + "".join(_PUNCT)
WIDE = [chr(0x4E00 + i) for i in range(4938)]  # with ALPHABET: a 5,000-character vocab


def _word_list(rng: random.Random, n: int = 4000, wide: bool = False) -> list[str]:
    words = []
    for _ in range(n):
        if wide and rng.random() < 0.3:  # a word of 1-3 wide (3-byte UTF-8) characters
            words.append("".join(rng.choices(WIDE, k=rng.randint(1, 3))))
            continue
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 4))))
        r = rng.random()
        if r < 0.15:
            w = w.capitalize()
        elif r < 0.18:
            w = w.upper()
        if rng.random() < 0.12:
            w += rng.choice(_PUNCT)
        words.append(w)
    if wide:
        words += WIDE  # every wide character is in the vocabulary list at least once
    return words


def make_chunk(seed: int, size: int, wide: bool = False) -> bytes:
    """About `size` bytes of UTF-8 text: lines of made-up words, some capitalized and
    punctuated; with `wide`, a third of the words in 4,938 CJK characters."""
    rng = random.Random(seed)
    words = _word_list(rng, wide=wide)
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(words, k=rng.randint(3, 14)))
        if rng.random() < 0.08:
            line += "\n"  # a blank line now and then: paragraphs
        lines.append(line)
        total += len(line.encode()) + 1
    if wide:  # each wide character once, so every chunk holds the whole vocab
        lines.append("".join(WIDE))
    data = ("\n".join(lines) + "\n").encode()
    return data if wide else data[:size - 1] + b"\n"


def write_text(path: Path, size: int, seed: int = 0, wide: bool = False) -> Path:
    """Write about `size` bytes of generated text (1 MB chunks in a seeded order); with
    `wide`, a UTF-8 text whose vocab is about 5,000 characters (whole chunks only)."""
    chunk_size = 1 << 20
    chunks = [make_chunk(seed * 100 + i, chunk_size, wide)
              for i in range(min(4, -(-size // chunk_size)))]
    order = random.Random(seed)
    left = size
    with open(path, "wb") as fh:
        while left > 0:
            piece = order.choice(chunks)
            piece = piece if wide else piece[:left]
            fh.write(piece)
            left -= len(piece)
    return path


# ------------------------------------------------------------------------------ bare PyTorch

def bare_model_class():
    import torch
    from torch import nn

    class BareLM(nn.Module):
        """Embedding -> fused nn.LSTM/GRU/RNN (batch_first) -> Linear; same parameter names as
        charrnn's CharRNN so that one can load the other's weights."""

        def __init__(self, cell: str, vocab: int, embed: int, hidden: int, layers: int):
            super().__init__()
            self.embed = nn.Embedding(vocab, embed)
            self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](
                embed, hidden, layers, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, x: torch.Tensor, h=None):
            out, h = self.rnn(self.embed(x), h)
            return self.head(out), h

    return BareLM


class Context:
    """What every benchmark needs: device, threads, settings, temp folder, generated text."""

    def __init__(self, args, device, tmp: Path):
        import torch
        self.args, self.device, self.tmp = args, device, tmp
        self.mode = "quick" if args.quick else "full"
        self.s = dict(MODES[self.mode])
        if args.repeats:
            self.s["repeats"] = self.s["sample_repeats"] = self.s["eval_repeats"] = args.repeats
        if args.steps:
            self.s["steps"] = args.steps
        if args.hidden:
            self.s["hidden"] = args.hidden
        self.s["models"] = args.models or list(MODELS)
        self.s.update(getattr(args, "settings", None) or {})  # --set KEY=VALUE
        self.threads = args.threads
        self.cuda = device.type == "cuda"
        from charrnn.device import configure_precision, resolve_precision
        # the bare loops run in the precision charrnn's `auto` resolves to (TF32 on CUDA)
        self.precision = resolve_precision("auto", device)
        configure_precision(self.precision, device)
        self.precision_note = f"{self.precision} (charrnn's precision: auto)"
        self.train_text = write_text(tmp / "train.txt", TRAIN_CORPUS_BYTES, seed=1)
        self.BareLM = bare_model_class()
        self.torch = torch
        self.env = dict(os.environ, CHARRNN_CACHE_DIR=str(tmp / "cache-subprocess"),
                        NO_COLOR="1")
        self.env.pop("CHARRNN_CHECKPOINT", None)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def autocast(self):
        from charrnn.device import autocast
        return autocast(self.device, self.precision)

    def seconds(self, fn) -> float:
        """Wall time of one call of `fn` after two warm-up calls, through torch.utils.benchmark
        (which synchronizes CUDA; the thread count stays this run's). For calls of a second or
        less; a long call is better timed once with `once`."""
        from torch.utils.benchmark import Timer
        timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=self.threads)
        return timer.timeit(1).mean

    def once(self, fn) -> float:
        """Wall time of a single call of `fn`, CUDA synchronized on both sides."""
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def charrnn_cmd(self) -> list[str]:
        """The `charrnn` console script beside this Python (the .venv's), else `python -m`."""
        self.env["PYTHONPATH"] = os.pathsep.join(  # this checkout's charrnn, installed or not
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        exe = Path(sys.executable).parent / ("charrnn.exe" if os.name == "nt" else "charrnn")
        return [str(exe)] if exe.exists() else [sys.executable, "-m", "charrnn"]
