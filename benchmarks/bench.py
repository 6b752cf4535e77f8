#!/usr/bin/env python
"""The benchmark harness behind the README's performance table (`make bench`, `make bench-quick`).

It measures charrnn side by side with bare PyTorch written here, in one process, alternating
the two (A B A B ...) and reporting medians, because the machines it runs on are noisy:

    train    chars/s of charrnn.train.train vs a bare Embedding -> LSTM/GRU/RNN -> Linear loop
    sample   chars/s of charrnn.sampling.generate vs a bare loop (torch defaults, oneDNN off)
    eval     chars/s of charrnn.evaluate.evaluate_text (and a bare no-grad loop) over a text
    load     load_corpus on a generated 100 MB text: first load, cached load, memory per char
    startup  `charrnn --help` and `charrnn sample --length 1` as whole processes
    memory   peak resident memory of a short `charrnn train` at hidden size 512

It prints a Markdown table on stdout (progress goes to stderr) and writes the same figures as
JSON to benchmarks/results/<machine>-<YYYY-MM-DD>.json (`-quick` added in --quick mode).

    .venv/bin/python benchmarks/bench.py              # full run, ~10-15 minutes on 2 cores
    .venv/bin/python benchmarks/bench.py --quick      # smoke test, well under 90 s
    .venv/bin/python benchmarks/bench.py --only train,sample --models lstm --hidden 256
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # measure this checkout's charrnn, installed or not
    sys.path.insert(0, str(ROOT))

GROUPS = ("train", "sample", "eval", "load", "startup", "memory")
MODELS = ("lstm", "gru", "rnn")
SCHEMA = 1

# Shapes fixed by DESIGN 7 / the issue: 2 layers, embedding 64, batch 64, seq_len 100.
EMBED, LAYERS, BATCH, SEQ = 64, 2, 64, 100
LR, GRAD_CLIP, TEMPERATURE, PRIME = 2.0e-3, 5.0, 0.8, "The "
SAMPLE_HIDDEN = 256  # the sampling / eval model: LSTM 2x256, as in BASELINES.md
TRAIN_CORPUS_BYTES = 700_000  # below charrnn's 1 MiB cache threshold: plain read every time

MODES = {
    "quick": {"hidden": [128], "warmup": 2, "timed_s": 0.6, "min_steps": 4, "repeats": 2,
              "sample_len_1": 300, "sample_len_32": 300, "sample_repeats": 3,
              "eval_chars": 60_000, "eval_repeats": 2, "load_mb": 20, "startup_repeats": 3,
              "memory_steps": 2},
    "full": {"hidden": [128, 256, 512], "warmup": 3, "timed_s": 3.0, "min_steps": 8,
             "repeats": 5, "sample_len_1": 2000, "sample_len_32": 1000, "sample_repeats": 5,
             "eval_chars": 1_000_000, "eval_repeats": 2, "load_mb": 100, "startup_repeats": 5,
             "memory_steps": 5},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------------------ generated text

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "da", "fo", "gu", "ha", "je",
              "qu", "wy", "xe", "zo", "th", "sh", "ch", "st", "an", "er", "in", "on", "ou", "ea",
              "pl", "gr", "ck", "ng")
_PUNCT = (",", ".", ";", ":", "!", "?", "'s", "-")
ALPHABET = string.ascii_letters + " \n" + "".join(_PUNCT)


def _word_list(rng: random.Random, n: int = 4000) -> list[str]:
    words = []
    for _ in range(n):
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 4))))
        r = rng.random()
        if r < 0.15:
            w = w.capitalize()
        elif r < 0.18:
            w = w.upper()
        if rng.random() < 0.12:
            w += rng.choice(_PUNCT)
        words.append(w)
    return words


def make_chunk(seed: int, size: int) -> bytes:
    """`size` bytes of ASCII text: lines of made-up words, some capitalized and punctuated."""
    rng = random.Random(seed)
    words = _word_list(rng)
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(words, k=rng.randint(3, 14)))
        if rng.random() < 0.08:
            line += "\n"  # a blank line now and then: paragraphs
        lines.append(line)
        total += len(line) + 1
    data = ("\n".join(lines) + "\n").encode("ascii")
    return data[:size - 1] + b"\n"


def write_text(path: Path, size: int, seed: int = 0) -> Path:
    """Write `size` bytes of generated text (1 MB chunks in a seeded order)."""
    chunk_size = 1 << 20
    chunks = [make_chunk(seed * 100 + i, chunk_size) for i in range(min(4, -(-size // chunk_size)))]
    order = random.Random(seed)
    left = size
    with open(path, "wb") as fh:
        while left > 0:
            piece = order.choice(chunks)[:left]
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
        self.threads = args.threads
        self.cuda = device.type == "cuda"
        self.precision_note = "bf16 autocast (charrnn's precision: auto)" if self.cuda else "fp32"
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
        if self.cuda:
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def charrnn_cmd(self) -> list[str]:
        """The `charrnn` console script beside this Python (the .venv's), else `python -m`."""
        exe = Path(sys.executable).parent / ("charrnn.exe" if os.name == "nt" else "charrnn")
        if exe.exists():
            return [str(exe)]
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        return [sys.executable, "-m", "charrnn"]


def row(group: str, name: str, value, unit: str, *, reference=None, reference_name=None,
        ratio=None, target=None, target_on="ratio", samples=None, **extra) -> dict:
    """One result. `target` is (op, number) checked against the ratio or the value."""
    met = None
    if target is not None:
        got = ratio if target_on == "ratio" else value
        op, bound = target
        if got is not None:
            met = bool(got >= bound) if op == ">=" else bool(got < bound)
    spread = None
    runs = [xs for xs in (samples or {}).values() if len(xs) > 1 and min(xs) > 0]
    if runs:  # the widest max/min - 1 over the sides' repeats: how noisy the machine was
        spread = max(max(xs) / min(xs) - 1 for xs in runs)
    return {"group": group, "name": name, "value": value, "unit": unit,
            "reference": reference, "reference_name": reference_name, "ratio": ratio,
            "target": None if target is None else {"op": target[0], "value": target[1],
                                                     "on": target_on},
            "met": met, "samples": samples or {}, "spread": spread, **extra}


# ------------------------------------------------------------------------------ 1. training

def _charrnn_train_once(ctx: Context, cell: str, hidden: int, warmup: int, steps: int,
                        out_dir: Path) -> tuple[float, float]:
    """chars/s of charrnn.train.train after `warmup` steps, and its last step's loss."""
    from charrnn.config import config_from_dict
    from charrnn.train import train

    cfg = config_from_dict({
        "data": {"path": str(ctx.train_text), "val_fraction": 0.0},
        "model": {"type": cell, "embedding_dim": EMBED, "hidden_size": hidden,
                  "num_layers": LAYERS, "dropout": 0.0},
        "train": {"batch_size": BATCH, "seq_len": SEQ, "max_steps": warmup + steps, "lr": LR,
                  "lr_schedule": "constant", "weight_decay": 0.0, "grad_clip": GRAD_CLIP, "eval_every": 10 ** 9, "save_every": None,
                  "log_every": 1, "device": ctx.args.device, "threads": ctx.threads,
                  "seed": 1337, "out_dir": str(out_dir)},
    }, source="bench")
    windows = []  # (step, chars_per_sec, train_loss) of every "step" event

    def on_event(kind: str, info: dict) -> None:
        if kind == "step":
            windows.append((info["step"], info["chars_per_sec"], info["train_loss"]))

    train(cfg, run_dir=str(out_dir), on_event=on_event)
    shutil.rmtree(out_dir, ignore_errors=True)
    chars = seconds = 0.0
    prev = 0
    for step, rate, _ in windows:
        n = (step - prev) * BATCH * SEQ
        prev = step
        if step > warmup:
            chars += n
            seconds += n / rate
    if not seconds:
        raise RuntimeError(f"charrnn train emitted no step events after step {warmup}")
    return chars / seconds, windows[-1][2]


def _bare_train_once(ctx: Context, ids, vocab_size: int, cell: str, hidden: int, warmup: int,
                     steps: int) -> tuple[float, float]:
    """chars/s of the bare loop over `steps` timed steps after `warmup` untimed ones, and the
    last step's loss (charrnn's must match it: same seed, weights, data and learning rate)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(1337)
    model = ctx.BareLM(cell, vocab_size, EMBED, hidden, LAYERS).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    per = (len(ids) - 1) // BATCH
    windows = per // SEQ
    xs = ids[: BATCH * per].view(BATCH, per)
    ys = ids[1: BATCH * per + 1].view(BATCH, per)
    h, t0 = None, None
    for i in range(warmup + steps):
        if i == warmup:
            ctx.sync()
            t0 = time.perf_counter()
        w = i % windows
        if w == 0:
            h = None  # a new pass over the text starts from an empty state (as charrnn does)
        x, y = xs[:, w * SEQ:(w + 1) * SEQ], ys[:, w * SEQ:(w + 1) * SEQ]
        with ctx.autocast():
            logits, h = model(x, h)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        h = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
    ctx.sync()
    rate = steps * BATCH * SEQ / (time.perf_counter() - t0)
    return rate, loss.item()


def _calibrate(ctx: Context, ids, vocab_size: int, cell: str, hidden: int) -> int:
    """Timed steps per measurement: enough for about `timed_s` seconds (the bare loop's pace)."""
    rate, _ = _bare_train_once(ctx, ids, vocab_size, cell, hidden, ctx.s["warmup"], 2)
    steps = math.ceil(ctx.s["timed_s"] * rate / (BATCH * SEQ))
    return min(2000, max(ctx.s["min_steps"], steps))


def bench_train(ctx: Context) -> list[dict]:
    import torch
    from charrnn.data import load_corpus

    corpus = load_corpus(str(ctx.train_text), 0.0, use_cache=False)
    ids = corpus.ids.long().to(ctx.device)  # a bare loop keeps the whole text on the device
    rows = []
    models, hiddens = ctx.s["models"], ctx.s["hidden"]
    warmup, repeats = ctx.s["warmup"], ctx.s["repeats"]
    for hidden in hiddens:
        for cell in models:
            steps = ctx.args.steps or _calibrate(ctx, ids, len(corpus.vocab), cell, hidden)
            a, b = [], []
            for r in range(repeats):
                rate, loss_a = _charrnn_train_once(ctx, cell, hidden, warmup, steps,
                                                   ctx.tmp / f"run-{cell}-{hidden}-{r}")
                a.append(rate)
                rate, loss_b = _bare_train_once(ctx, ids, len(corpus.vocab), cell, hidden,
                                                warmup, steps)
                b.append(rate)
                log(f"train {cell} h{hidden} repeat {r + 1}/{repeats} ({steps} steps): "
                    f"charrnn {a[-1]:,.0f} "
                    f"bare {b[-1]:,.0f} chars/s")
            ca, cb = median(a), median(b)
            rows.append(row("train", f"train {cell} h{hidden}", ca, "chars/s", reference=cb,
                            reference_name="bare PyTorch loop", ratio=ca / cb,
                            target=(">=", 0.97), samples={"charrnn": a, "reference": b},
                            model=cell, hidden=hidden, steps=steps, warmup=warmup,
                            batch=BATCH, seq_len=SEQ, mkldnn=torch.backends.mkldnn.enabled,
                            final_loss={"charrnn": loss_a, "reference": loss_b}))
            if not math.isclose(loss_a, loss_b, rel_tol=0.02):
                log(f"train {cell} h{hidden}: the last losses differ (charrnn {loss_a:.4f}, "
                    f"bare {loss_b:.4f}): the two loops no longer compute the same thing")
    return rows


# ------------------------------------------------------------------------------ models for 2, 3

def _lstm_pair(ctx: Context):
    """charrnn's LSTM 2x256 (random weights) and a bare model with the very same weights."""
    import torch
    from charrnn.config import ModelConfig
    from charrnn.models import build_model
    from charrnn.vocab import Vocab

    vocab = Vocab.from_text(ALPHABET)  # every character the text generator can write
    torch.manual_seed(1337)
    model = build_model(ModelConfig(type="lstm", embedding_dim=EMBED, hidden_size=SAMPLE_HIDDEN,
                                    num_layers=LAYERS, dropout=0.0), len(vocab)).to(ctx.device)
    model.eval()
    bare = ctx.BareLM("lstm", len(vocab), EMBED, SAMPLE_HIDDEN, LAYERS).to(ctx.device)
    bare.load_state_dict(model.state_dict())
    bare.eval()
    return model, bare, vocab


# ------------------------------------------------------------------------------ 2. sampling

def _charrnn_sample(ctx: Context, model, vocab, n: int, length: int) -> float:
    from charrnn.sampling import generate

    ctx.sync()
    t0 = time.perf_counter()
    steps = list(generate(model, vocab, [PRIME] * n, length, device=ctx.device,
                          temperature=TEMPERATURE, seed=1))
    texts = ["".join(parts) for parts in zip(*steps)]
    ctx.sync()
    dt = time.perf_counter() - t0
    assert len(texts) == n and all(len(t) == length for t in texts)
    return n * length / dt


def _bare_sample(ctx: Context, bare, vocab, n: int, length: int, mkldnn: bool) -> float:
    import torch

    flags = (contextlib.nullcontext() if mkldnn or ctx.device.type != "cpu"
             else torch.backends.mkldnn.flags(enabled=False))
    gen = torch.Generator(device=ctx.device)
    gen.manual_seed(1)
    prime = torch.tensor([vocab.index[c] for c in PRIME], device=ctx.device)
    ctx.sync()
    t0 = time.perf_counter()
    with torch.inference_mode(), flags:
        logits, h = bare(prime.unsqueeze(0).expand(n, -1))
        logits = logits[:, -1]
        out = []
        for _ in range(length):
            probs = torch.softmax(logits / TEMPERATURE, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)  # (n, 1)
            out.append(nxt)
            logits, h = bare(nxt, h)
            logits = logits[:, -1]
        ids = torch.cat(out, dim=1).tolist()
    chars = vocab.chars
    texts = ["".join(chars[i] for i in r) for r in ids]
    ctx.sync()
    dt = time.perf_counter() - t0
    assert len(texts) == n and all(len(t) == length for t in texts)
    return n * length / dt


def bench_sample(ctx: Context) -> list[dict]:
    model, bare, vocab = _lstm_pair(ctx)
    variants = [("defaults", True)] + ([("mkldnn off", False)] if ctx.device.type == "cpu"
                                       else [])
    rows, results = [], {}
    for n, length in ((1, ctx.s["sample_len_1"]), (32, ctx.s["sample_len_32"])):
        # warm-up: first calls build kernels / oneDNN primitives
        _charrnn_sample(ctx, model, vocab, n, 20)
        for _, mk in variants:
            _bare_sample(ctx, bare, vocab, n, 20, mk)
        got = {"charrnn": []} | {v: [] for v, _ in variants}
        for r in range(ctx.s["sample_repeats"]):
            got["charrnn"].append(_charrnn_sample(ctx, model, vocab, n, length))
            for v, mk in variants:
                got[v].append(_bare_sample(ctx, bare, vocab, n, length, mk))
            log(f"sample batch {n} repeat {r + 1}/{ctx.s['sample_repeats']}: " +
                ", ".join(f"{k} {xs[-1]:,.0f}" for k, xs in got.items()) + " chars/s")
        results[n] = {k: median(v) for k, v in got.items()}
        c = results[n]["charrnn"]
        for v, _ in variants:
            rows.append(row("sample", f"sample b{n} vs bare ({v})", c, "chars/s",
                            reference=results[n][v], reference_name=f"bare loop, {v}",
                            ratio=c / results[n][v], target=(">=", 0.9),
                            samples={"charrnn": got["charrnn"], "reference": got[v]},
                            batch=n, length=length, model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}"))
    one, many = results[1]["charrnn"], results[32]["charrnn"]
    rows.append(row("sample", "sample b32 / b1 (charrnn)", many, "chars/s", reference=one,
                    reference_name="charrnn batch 1", ratio=many / one, target=(">=", 10.0),
                    model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}"))
    return rows


# ------------------------------------------------------------------------------ 3. eval

def _bare_eval(ctx: Context, bare, table: bytes, text: str, vocab_size: int,
               streams: int = 16, seq_len: int = 256) -> float:
    import torch
    import torch.nn.functional as F

    ctx.sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        ids = torch.frombuffer(bytearray(text.encode("ascii").translate(table)),
                               dtype=torch.uint8)
        streams = max(1, min(streams, (len(ids) - 1) // 1024))
        per = (len(ids) - 1) // streams
        xs = ids[: streams * per].view(streams, per)
        ys = ids[1: streams * per + 1].view(streams, per)
        total, h = torch.zeros((), dtype=torch.float64, device=ctx.device), None
        for start in range(0, per, seq_len):
            x = xs[:, start:start + seq_len].long().to(ctx.device)
            y = ys[:, start:start + seq_len].long().to(ctx.device)
            with ctx.autocast():
                logits, h = bare(x, h)
            total += F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1),
                                     reduction="sum").double()
        total.item()
    ctx.sync()
    return (len(ids) - 1) / (time.perf_counter() - t0)


def bench_eval(ctx: Context) -> list[dict]:
    from charrnn.evaluate import evaluate_text

    model, bare, vocab = _lstm_pair(ctx)
    size = ctx.s["eval_chars"]
    path = write_text(ctx.tmp / "eval.txt", size, seed=3)
    text = path.read_text(encoding="ascii")
    table = bytes(vocab.index.get(chr(b), 0) for b in range(256))
    a, b = [], []
    evaluate_text(model, vocab, text[:20_000], ctx.device)  # warm-up
    _bare_eval(ctx, bare, table, text[:20_000], len(vocab))
    for r in range(ctx.s["eval_repeats"]):
        ctx.sync()
        t0 = time.perf_counter()
        res = evaluate_text(model, vocab, text, ctx.device)
        ctx.sync()
        a.append(res["chars"] / (time.perf_counter() - t0))
        b.append(_bare_eval(ctx, bare, table, text, len(vocab)))
        log(f"eval repeat {r + 1}/{ctx.s['eval_repeats']}: charrnn {a[-1]:,.0f} "
            f"bare {b[-1]:,.0f} chars/s")
    ca, cb = median(a), median(b)
    mb = size / 1e6
    return [row("eval", f"eval {mb:g} MB", ca, "chars/s", reference=cb,
                reference_name="bare no-grad loop, same streams", ratio=ca / cb,
                samples={"charrnn": a, "reference": b}, chars=size,
                model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}", streams=16, seq_len=256)]


# ------------------------------------------------------------------------------ 4. corpus load

_LOAD_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out
import torch
from charrnn.data import load_corpus
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
                  "rss_before": before.get("VmRSS"), "hwm_before": before.get("VmHWM"),
                  "rss_after": after.get("VmRSS"), "hwm_after": after.get("VmHWM"),
                  "hwm_reset": reset}))
"""


def _load_child(ctx: Context, path: Path, cache: Path) -> dict:
    env = dict(ctx.env, CHARRNN_CACHE_DIR=str(cache))
    res = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path), str(ROOT)], env=env,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"corpus load subprocess failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_load(ctx: Context) -> list[dict]:
    if not Path("/proc/self/status").exists():
        log("load: /proc/self/status is missing (not Linux); skipped")
        return []
    mb = ctx.s["load_mb"]
    size = mb * 1_000_000
    t0 = time.perf_counter()
    path = write_text(ctx.tmp / "big.txt", size, seed=5)
    log(f"load: wrote {mb} MB of generated text in {time.perf_counter() - t0:.1f} s")
    cache = ctx.tmp / "cache-load"
    first = _load_child(ctx, path, cache)
    second = _load_child(ctx, path, cache)
    shutil.rmtree(cache, ignore_errors=True)
    path.unlink()
    log(f"load: first {first['seconds']:.2f} s, cached {second['seconds']:.2f} s "
        f"(cache hit: {second['cached']})")
    chars = first["chars"]

    def per_char(run: dict, end: str):
        if run.get(end) is None or run.get("rss_before") is None:
            return None  # this kernel's /proc/self/status lacks VmRSS / VmHWM
        return (run[end] - run["rss_before"]) / chars

    peak, held = per_char(first, "hwm_after"), per_char(first, "rss_after")
    peak2, held2 = per_char(second, "hwm_after"), per_char(second, "rss_after")
    rate = size / 1e6 / first["seconds"]
    note = "the text was just written, so it is read from the page cache"
    return [
        row("load", f"load first ({mb} MB)", rate, "MB/s", target=(">=", 50.0),
            target_on="value", seconds=first["seconds"], chars=chars, note=note, raw=first),
        row("load", "load cached", second["seconds"], "s", target=("<", 1.0),
            target_on="value", cache_hit=second["cached"], raw=second),
        row("load", "load peak memory", peak, "B/char", target=("<", 3.0), target_on="value",
            hwm_reset=first["hwm_reset"], cached_load=peak2),
        row("load", "load held memory", held, "B/char", target=("<", 1.5), target_on="value",
            cached_load=held2),
    ]


# ------------------------------------------------------------------------------ 5. start-up

def _small_checkpoint(ctx: Context) -> Path:
    from charrnn.config import config_from_dict
    from charrnn.train import train

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


def bench_startup(ctx: Context) -> list[dict]:
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


# ------------------------------------------------------------------------------ 6. memory

def bench_memory(ctx: Context) -> list[dict]:
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
            "--quiet", "--threads", str(ctx.threads), "--device", ctx.args.device]
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


# ------------------------------------------------------------------------------ report

def _fmt(value, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("chars/s", "MB/s", "MB"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.2f} {unit}"


def _target_text(r: dict) -> str:
    t = r["target"]
    if t is None:
        return "—"
    op = "≥" if t["op"] == ">=" else "<"
    if t["on"] == "ratio":
        return f"ratio {op} {t['value']:g}"
    return f"{op} {t['value']:g} {r['unit']}"


def markdown(report: dict) -> str:
    lines = [f"charrnn benchmarks — {report['machine']}, {report['date']}, mode {report['mode']}",
             "",
             f"torch {report['torch']}, device {report['device']}"
             f"{' (' + report['device_name'] + ')' if report.get('device_name') else ''}, "
             f"{report['threads']} thread(s) of {report['cores']} core(s), "
             f"precision {report['precision']}, mkldnn default "
             f"{'on' if report['mkldnn_default'] else 'off'}; medians of alternating repeats",
             "",
             "| benchmark | charrnn | reference | ratio | target | met | spread |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        ref = "—"
        if r["reference"] is not None:
            ref = f"{_fmt(r['reference'], r['unit'])} ({r['reference_name']})"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        spread = "—" if r.get("spread") is None else f"{100 * r['spread']:.0f}%"
        lines.append(f"| {r['name']} | {_fmt(r['value'], r['unit'])} | {ref} | {ratio} | "
                     f"{_target_text(r)} | {met} | {spread} |")
    lines += ["", "spread: (max / min - 1) of the repeats of the noisier side; load average "
              f"{report['loadavg_start']} at the start, {report['loadavg_end']} at the end"
              f"{_busy_note(report)}; total {report['duration_s']:.0f} s"]
    return "\n".join(lines)


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _busy_note(report: dict) -> str:
    loads = [x for x in (report["loadavg_start"], report["loadavg_end"]) if x is not None]
    if loads and max(loads) > 0.5 + report["threads"] * 0.5 and report["device"] == "cpu":
        return (" (**other work was running on these cores: the figures are unreliable**; "
                "benchmark on an idle machine)")
    return ""


def machine_slug(device) -> str:
    import torch
    from charrnn.device import available_cores

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cuda"
    return f"{device.type}{available_cores()}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small step counts, fewer repeats (a smoke test for CI, < 90 s)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: charrnn.device.available_cores())")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/<machine>-<date>[-quick].json)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated rows to run, of: {', '.join(GROUPS)}")
    p.add_argument("--models", default=None,
                   help=f"training rows: model families (default {','.join(MODELS)})")
    p.add_argument("--hidden", default=None,
                   help="training rows: hidden sizes (default 128,256,512; quick: 128)")
    p.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    p.add_argument("--steps", type=int, default=None,
                   help="override the timed training steps per measurement")
    p.add_argument("--machine", default=None, help="machine name for the JSON file name")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = p.parse_args(argv)
    args.only = _split(args.only, GROUPS, "--only") or list(GROUPS)
    args.models = _split(args.models, MODELS, "--models")
    args.hidden = [int(h) for h in args.hidden.split(",")] if args.hidden else None
    return args


def _split(text, allowed, flag):
    if not text:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"{flag}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), _loadavg()
    import torch
    import charrnn
    from charrnn.device import available_cores, resolve_device, set_threads

    device = resolve_device(args.device)
    args.device = str(device)
    args.threads = set_threads(args.threads)
    runners = {"train": bench_train, "sample": bench_sample, "eval": bench_eval,
               "load": bench_load, "startup": bench_startup, "memory": bench_memory}
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        os.environ["CHARRNN_CACHE_DIR"] = str(Path(tmp) / "cache")  # never ~/.cache
        ctx = Context(args, device, Path(tmp))
        log(f"mode {ctx.mode}, device {device}, {args.threads} thread(s), torch "
            f"{torch.__version__}, rows: {', '.join(args.only)}")
        for group in GROUPS:
            if group in args.only:
                t0 = time.perf_counter()
                rows += runners[group](ctx)
                log(f"{group}: {time.perf_counter() - t0:.1f} s")
    today = _dt.date.today().isoformat()
    machine = args.machine or machine_slug(device)
    report = {
        "schema": SCHEMA, "machine": machine, "date": today,
        "timestamp": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": ctx.mode, "torch": torch.__version__, "charrnn": charrnn.__version__,
        "python": platform.python_version(), "platform": f"{platform.system()} "
                                                         f"{platform.machine()}",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": args.threads, "cores": available_cores(), "precision": ctx.precision_note,
        "mkldnn_default": bool(torch.backends.mkldnn.is_available()
                               and torch.backends.mkldnn.enabled),
        "settings": {k: v for k, v in ctx.s.items()}, "rows_run": args.only,
        "loadavg_start": load_start, "loadavg_end": _loadavg(),
        "duration_s": time.perf_counter() - started, "rows": rows,
    }
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results"
        / f"{machine}-{today}{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, out)
    print(markdown(report), flush=True)
    log(f"wrote {out}")
    missed = [r["name"] for r in rows if r["met"] is False]
    if missed:
        log(f"targets not met: {', '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
