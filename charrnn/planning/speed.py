"""How fast this device trains a model shape: a probe of a few steps, cached per machine.

The thread count (and the planner's sizes) are chosen from measured step times, not from rules
of thumb: on a 2-core CPU a 1 x 128 LSTM trains faster on one thread than on two, and on a
loaded machine two threads can be several times slower than one. A probe builds the shape,
takes one warm-up step and times a few more (forward, backward, clip, AdamW), so it costs
seconds; its result is kept in `probe/speed.json` in charrnn's cache folder under a key naming this
machine, device and torch version, so the next run of the same shape does not probe again.
`reprobe=True` measures anew (a machine that has become busier or idler).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn.text.cache import cache_dir
from charrnn.device import available_cores
from charrnn.fsutil import write_text_atomic

SPEED_FORMAT = 1
PROBE_SECONDS = 0.3  # time enough per measurement for a median over several steps
PROBE_STEPS = (2, 5)  # at least, at most: timed steps after the warm-up
TIE = 0.05  # step times this close are the same speed


@dataclass(frozen=True)
class Shape:
    """What a training step's cost depends on (dropout and lr barely change it)."""

    family: str
    vocab_size: int
    embedding_dim: int
    hidden_size: int
    num_layers: int
    batch_size: int
    seq_len: int

    @classmethod
    def of(cls, cfg, vocab_size: int) -> "Shape":
        """The shape of config `cfg` on an alphabet of `vocab_size` characters."""
        m, t = cfg.model, cfg.train
        return cls(m.type, vocab_size, m.embedding_dim, m.hidden_size, m.num_layers,
                   t.batch_size, t.seq_len)

    @property
    def key(self) -> str:
        return (f"{self.family}-v{self.vocab_size}-e{self.embedding_dim}-h{self.hidden_size}"
                f"x{self.num_layers}-b{self.batch_size}x{self.seq_len}")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count chosen and the seconds per step measured (or cached) for each count."""

    threads: int
    seconds: dict[int, float]
    cached: bool

    def describe(self) -> str:
        if not self.seconds:
            return f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} (no other count to try)"
        times = ", ".join(f"{n}: {s * 1000:.0f} ms" for n, s in sorted(self.seconds.items()))
        source = "cached measurement" if self.cached else "measured"
        return (f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} "
                f"({source}, per step by threads: {times})")


def machine_key(device: torch.device) -> str:
    """Which speeds may be reused: the same processor (or GPU), cores and torch version."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = f"{props.name}|cuda {torch.version.cuda}|cudnn {torch.backends.cudnn.version()}"
    else:
        name = f"{_cpu_model()}|{platform.machine()}|{available_cores()} cores"
    return f"{device.type}|{name}|torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def speed_file() -> Path:
    """In a folder of its own: the corpus cache's listing, bound and --clear leave it alone."""
    return cache_dir() / "probe" / "speed.json"


def _load_table() -> dict:
    try:
        table = json.loads(speed_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"format": SPEED_FORMAT, "machines": {}}
    if not isinstance(table, dict) or table.get("format") != SPEED_FORMAT:
        return {"format": SPEED_FORMAT, "machines": {}}  # an older layout: measure again
    return table


def _save_table(table: dict) -> None:
    """Best effort: a read-only cache folder costs a probe next time, never the run."""
    try:
        speed_file().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(speed_file(), json.dumps(table, indent=1, sort_keys=True),
                          durable=False)
    except OSError:
        pass


def time_step(shape: Shape, device: torch.device, threads: int | None = None) -> float:
    """Median seconds of one training step of `shape` on `device` with `threads` CPU threads."""
    from charrnn.config import ModelConfig
    from charrnn.models import build_model

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        model = build_model(ModelConfig(type=shape.family, embedding_dim=shape.embedding_dim,
                                        hidden_size=shape.hidden_size,
                                        num_layers=shape.num_layers), shape.vocab_size)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as training
        ids = torch.randint(shape.vocab_size, (shape.batch_size, shape.seq_len + 1),
                            generator=generator).to(device)
        x, y = ids[:, :-1], ids[:, 1:]

        def step() -> float:
            start = time.perf_counter()
            logits, _ = model(x)
            loss = F.cross_entropy(logits.view(-1, shape.vocab_size), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        step()  # warm-up: allocations, kernel choice
        times = [step()]
        while len(times) < PROBE_STEPS[1] and (len(times) < PROBE_STEPS[0]
                                               or sum(times) < PROBE_SECONDS):
            times.append(step())
        return statistics.median(times)
    finally:
        torch.set_num_threads(before)


def thread_candidates() -> list[int]:
    """1, the cores this process may use, and the powers of two between."""
    cores = available_cores()
    counts = {1, cores}
    n = 2
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def _measured(shape: Shape, device: torch.device, counts: list[int | None],
              reprobe: bool) -> tuple[dict[int | None, float], bool]:
    """Seconds per step of `shape` with each thread count (None: as the process is set),
    from the cache where it holds them; whether every one came from the cache."""
    table = _load_table()
    entries = table["machines"].setdefault(machine_key(device), {}).setdefault(shape.key, {})
    label = lambda n: "default" if n is None else str(n)  # noqa: E731
    seconds = {n: entries[label(n)] for n in counts if label(n) in entries and not reprobe}
    missing = [n for n in counts if n not in seconds]
    for n in missing:
        seconds[n] = time_step(shape, device, n)
        if math.isfinite(seconds[n]):
            entries[label(n)] = seconds[n]
    if missing:
        _save_table(table)
    return seconds, not missing


def step_seconds(shape: Shape, device: torch.device, threads: int | None = None, *,
                 reprobe: bool = False) -> float:
    """Seconds per training step of `shape` on `device`, measured once and cached."""
    return _measured(shape, device, [threads], reprobe)[0][threads]


def choose_threads(shape: Shape, *, reprobe: bool = False,
                   candidates: list[int] | None = None) -> ThreadChoice:
    """The CPU thread count that trains `shape` fastest here, measured once and cached."""
    candidates = candidates or thread_candidates()
    if len(candidates) == 1:  # one core: nothing to measure
        return ThreadChoice(candidates[0], {}, cached=True)
    measured, cached = _measured(shape, torch.device("cpu"), candidates, reprobe)
    fastest = min(measured.values())
    # within the noise of the fastest, fewer threads: they leave the other cores free
    best = min(n for n in candidates if measured[n] <= fastest * (1 + TIE))
    return ThreadChoice(best, measured, cached=cached)
