"""Plan a run: the model and training keys a user left unset, from the text, the device's
measured speed and the budget.

A fixed shape is wrong for most texts and budgets (an LSTM 2 x 256 with batch 64 loses 0.17 to
0.43 nats against a good choice in 2 minutes on a CPU). The plan reads the text's length and
alphabet, measures how fast this device trains each candidate shape (charrnn.planning.speed: a few steps,
cached per machine), and chooses:

- the largest candidate shape whose parameters the text can feed (at most PARAMS_PER_CHAR per
  training character: past that even dropout does not keep it from memorising) and that makes
  at least MIN_UPDATES optimizer steps within the budget (a larger one learns too little in the
  time);
- a small batch on a CPU, where it trains as many characters per second as a large one and so
  makes more updates; on a GPU the batch the probe finds fills it;
- dropout from how far the run could memorise the text: the passes over it the budget allows
  times the model's parameters per training character (a small model over a few passes: none);
- the learning rate by width, a short warm-up, and an evaluation cadence of about EVALS per run.

A key the user set (in the config, by --set or by a flag) is never changed; the rest is fitted
around it. The data keys are never planned: the held-out split is the user's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from charrnn.config import Config, ModelConfig
from charrnn.planning.speed import Shape, choose_threads, step_seconds

DEFAULT_MINUTES = 10.0  # the budget of a planned run given neither --max-minutes nor --max-steps
MIN_UPDATES = 1500  # the best 2-minute hand choices on a 2-core CPU made 1,535 to 2,000 updates
# at most this many parameters per training character: on 45,000 characters for 2 minutes
# 1 x 64 (the only shape 2 per character allowed) scored 1.754, 1 x 256 with dropout 0.1 1.741,
# 2 x 256 with 0.3 (19 per character) 1.691 (benchmarks/results/sizing-2min-cpu2-2026-12-02.json):
# dropout, not a smaller model, keeps a short text from being memorised: planned at 8, 1 x 256
# with 0.3 scored 1.642 (benchmarks/results/sizing-50k-planned-cpu2-2026-12-02.json)
PARAMS_PER_CHAR = 8.0
SEQ_LEN = 100
CPU_BATCH = 16  # on 2 cores batch 16, 32 and 64 train about as many characters per second
GPU_BATCHES = (64, 128, 256, 512)  # tried in turn while the characters per second still grow
GPU_GAIN = 1.2  # a larger batch must be this much faster per character to be worth it
# a whole run's characters per second over the probe's: the loop's own work per step, its
# evaluations and previews (1 x 128 on Tiny Shakespeare: 53,300/s over the run against 72,700/s
# probed; 2 x 128: 31,000 against 44,700)
RUN_EFFICIENCY = 0.72
# Adam's peak lr for layers of up to LR_WIDTH units: 1 x 256 on Tiny Shakespeare for 2 minutes
# gave 1.575 nats at 3e-3, 1.530 at 6.1e-3 and 1.52 at 8.5e-3 with dropout 0.1
# (benchmarks/results/tune-shakespeare-20m-cpu2-2026-12-02.json); on 11 MB of Python 1.548 at
# 3e-3 and 1.439 at 6e-3; 1 x 512 for 10 minutes of Tiny Shakespeare 1.434 and 1.431 at 6e-3
# (benchmarks/results/planner-lr-cpu2-2026-12-02.json); 1 x 512 for 10 minutes of the 11 MB
# 1.204, of Tiny Shakespeare 1.438 (benchmarks/results/sizing-10min-cpu2-2026-12-02.json).
# Wider layers are not measured here: they get half.
LR, LR_WIDTH, WIDE_LR = 6e-3, 512, 3e-3
EVALS = 10  # evaluations per run
# dropout by exposure (passes x parameters per training character): (below, dropout), else MAX
# (1 x 256 at exposure 1: 0 and 0.1 equal; 1 x 512 at 7: 0.1 gave 1.434; the licence texts
# at 28: 0.3 1.496, 0.1 1.504, 0 1.525)
DROPOUT_BY_EXPOSURE = ((1.0, 0.0), (10.0, 0.1))
MAX_DROPOUT = 0.3
EVAL_CHARS = 250_000  # an evaluation reads at most this much of the validation split
# (layers, hidden, embedding), smallest first
# (2 minutes of Tiny Shakespeare: 1 x 256 with embedding 64 1.589 nats, with 32 1.621; 2 x 128
# 1.698; benchmarks/results/sizing-dropout-cpu2-2026-12-01.json)
# (10 minutes of it: 2 x 256 with dropout 0.3 1.480, 1 x 512 with 0.1 1.434;
# benchmarks/results/planner-lr-cpu2-2026-12-02.json)
CPU_SHAPES = ((1, 64, 16), (1, 128, 32), (2, 128, 64), (1, 256, 64), (2, 256, 64), (1, 512, 64),
              (2, 512, 64), (3, 512, 64))
GPU_SHAPES = CPU_SHAPES + ((3, 768, 128), (3, 1024, 128))
PLANNED = ("model.type", "model.embedding_dim", "model.hidden_size", "model.num_layers",
           "model.dropout", "train.batch_size", "train.seq_len", "train.max_steps",
           "train.max_minutes", "train.lr", "train.min_lr_ratio", "train.warmup_steps",
           "train.lr_schedule", "train.weight_decay", "train.eval_every", "train.eval_batches",
           "train.threads")


@dataclass
class Plan:
    """A planned config and what led to it: the figures measured and each choice's reason."""

    config: Config
    text_chars: int
    train_chars: int
    vocab_size: int
    device: str
    minutes: float | None
    steps: int | None
    chars_per_second: float | None
    chars_to_read: float
    probe_seconds: float
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def passes(self) -> float:
        return self.chars_to_read / max(self.train_chars, 1)

    def to_dict(self) -> dict:
        return {"text_chars": self.text_chars, "train_chars": self.train_chars,
                "vocab_size": self.vocab_size, "device": self.device,
                "budget_minutes": self.minutes, "budget_steps": self.steps,
                "chars_per_second": self.chars_per_second, "chars_to_read": self.chars_to_read,
                "passes": self.passes, "probe_seconds": self.probe_seconds,
                "choices": {key: {"value": get_key(self.config, key), "reason": reason}
                            for key, reason in self.reasons.items()},
                "config": self.config.to_dict()}

    def describe(self) -> list[str]:
        """The block a planned run starts with: the figures, then each choice and why."""
        speed = (f"{self.chars_per_second:,.0f} characters/s expected over the run "
                 f"({RUN_EFFICIENCY:.0%} of the {self.chars_per_second / RUN_EFFICIENCY:,.0f}/s "
                 f"measured by the probe)"
                 if self.chars_per_second else "speed not needed for a step budget")
        budget = (f"{self.minutes:g} minutes" if self.minutes is not None
                  else f"{self.steps:,} steps")
        lines = [f"plan: {self.text_chars:,} characters ({self.train_chars:,} to train on), "
                 f"alphabet of {self.vocab_size}; budget {budget} on {self.device}; {speed}; "
                 f"about {self.chars_to_read:,.0f} characters read ({self.passes:.1f} passes "
                 f"over the text)"]
        lines += [f"  {key} = {get_key(self.config, key)}: {reason}"
                  for key, reason in self.reasons.items()]
        return lines


def get_key(cfg: Config, key: str) -> Any:
    """`cfg`'s value of `section.key`."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def set_key(cfg: Config, key: str, value: Any) -> Config:
    """A copy of `cfg` with `section.key` set to `value`."""
    section, name = key.split(".")
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})


def count_parameters(shape: Shape) -> int:
    """Parameters of `shape`, computed without building it (building even on the meta device
    imports seconds of torch)."""
    from charrnn.models import estimate_parameters
    return estimate_parameters(ModelConfig(type=shape.family, embedding_dim=shape.embedding_dim,
                                           hidden_size=shape.hidden_size,
                                           num_layers=shape.num_layers), shape.vocab_size)


class _Planner:
    """One plan's working state: the config so far, the keys the user fixed, the reasons."""

    def __init__(self, cfg: Config, user_keys: set[str]):
        self.cfg, self.user, self.reasons = cfg, user_keys, {}

    def free(self, key: str) -> bool:
        return key not in self.user

    def choose(self, key: str, value: Any, reason: str) -> None:
        if self.free(key):
            self.cfg = set_key(self.cfg, key, value)
            self.reasons[key] = reason

    def value(self, key: str) -> Any:
        return get_key(self.cfg, key)


def measured_seconds(shape: Shape, device: torch.device, threads: int | None,
                     reprobe: bool = False) -> float:
    """A training step's seconds, measured by the probe (and cached): on a CPU with the given
    threads, else with the count that is fastest for this shape."""
    if device.type != "cpu":
        return step_seconds(shape, device, reprobe=reprobe)
    if threads:
        return step_seconds(shape, device, threads, reprobe=reprobe)
    choice = choose_threads(shape, reprobe=reprobe)
    if not choice.seconds:  # one core: no count to choose
        return step_seconds(shape, device, reprobe=reprobe)
    return min(choice.seconds.values())


def plan_run(cfg: Config, user_keys: set[str], *, train_chars: int, text_chars: int,
             vocab_size: int, device: torch.device, reprobe: bool = False,
             seconds: Callable[[Shape], float] | None = None) -> Plan:
    """The plan for training `cfg` on a text of `train_chars` (of `text_chars`) characters
    with an alphabet of `vocab_size` on `device`; keys in `user_keys` stay as they are.

    `seconds(shape)` gives a training step's time (default: measured by the probe and cached,
    with the thread count fastest for it); the probe's own time is taken from a time budget.
    """
    started = time.monotonic()
    fixed_threads = cfg.train.threads if "train.threads" in user_keys else None
    seconds = seconds or (lambda shape: measured_seconds(shape, device, fixed_threads, reprobe))
    p = _Planner(cfg, set(user_keys))
    minutes = cfg.train.max_minutes if not p.free("train.max_minutes") else None
    steps = cfg.train.max_steps if not p.free("train.max_steps") else None
    if minutes is None and steps is None:
        minutes = DEFAULT_MINUTES
        p.reasons["train.max_minutes"] = "the default budget of a planned run"
    p.choose("model.type", "lstm", "gated, and the fastest family per quality here")
    _choose_window(p, train_chars, device)
    shape, rate = _choose_shape(p, train_chars, vocab_size, device, minutes, seconds)
    budget_chars = (rate * minutes * 60 if minutes is not None
                    else float(steps) * p.value("train.batch_size") * p.value("train.seq_len"))
    if steps is not None and minutes is not None and rate:
        budget_chars = min(budget_chars, float(steps) * shape.batch_size * shape.seq_len)
    passes = budget_chars / max(train_chars, 1)
    updates = budget_chars / (p.value("train.batch_size") * p.value("train.seq_len"))
    _choose_regularisation(p, passes, count_parameters(Shape.of(p.cfg, vocab_size)), train_chars)
    _choose_schedule(p, updates, minutes, steps)
    if device.type == "cpu" and p.free("train.threads"):  # measured already: from the cache
        choice = choose_threads(Shape.of(p.cfg, vocab_size), reprobe=False)
        p.choose("train.threads", choice.threads, choice.describe())
    probe_seconds = time.monotonic() - started
    if minutes is not None and p.free("train.max_minutes"):  # the probe is part of the budget
        left = max(minutes - probe_seconds / 60, minutes * 0.5)
        p.cfg = set_key(p.cfg, "train.max_minutes", round(left, 3))
    p.cfg = set_key(p.cfg, "train.plan", False)  # resolved: a resume or a rerun plans no more
    return Plan(p.cfg, text_chars, train_chars, vocab_size, str(device), minutes, steps,
                rate or None, budget_chars, round(probe_seconds, 2), p.reasons)


def _choose_window(p: _Planner, train_chars: int, device: torch.device) -> None:
    """seq_len and a first batch that fit the text (one window of every stream, plus one)."""
    seq_len = p.value("train.seq_len") if not p.free("train.seq_len") else SEQ_LEN
    if p.free("train.seq_len") and seq_len + 1 > train_chars:
        seq_len = max(8, train_chars // 2 - 1)
    p.choose("train.seq_len", seq_len, "truncated backprop over 100 characters"
             if seq_len == SEQ_LEN else "as long as this short text allows")
    batch = CPU_BATCH if device.type != "cuda" else GPU_BATCHES[0]
    batch = max(1, min(batch, (train_chars - 1) // p.value("train.seq_len")))
    p.choose("train.batch_size", batch,
             "on a CPU a small batch reads as many characters per second as a large one, "
             "so it makes more updates" if device.type != "cuda" else "the GPU's first batch")


def _candidates(p: _Planner, vocab_size: int, device: torch.device) -> list[Shape]:
    """The candidate shapes, smallest first, with whatever the user fixed kept."""
    out = []
    for layers, hidden, embedding in (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES):
        out.append(Shape(p.value("model.type"), vocab_size,
                         embedding if p.free("model.embedding_dim") else p.value("model.embedding_dim"),
                         hidden if p.free("model.hidden_size") else p.value("model.hidden_size"),
                         layers if p.free("model.num_layers") else p.value("model.num_layers"),
                         p.value("train.batch_size"), p.value("train.seq_len")))
    # the user's fixed sizes make some candidates the same, and can reorder them
    return sorted(dict.fromkeys(out), key=count_parameters)


def _choose_shape(p: _Planner, train_chars: int, vocab_size: int, device: torch.device,
                  minutes: float | None, seconds) -> tuple[Shape, float]:
    """The largest shape the text can feed and the budget can train; its characters/s."""
    candidates = _candidates(p, vocab_size, device)
    fed = [s for s in candidates if count_parameters(s) <= PARAMS_PER_CHAR * train_chars]
    fed = fed or candidates[:1]
    chosen, rate, why = fed[0], 0.0, "the smallest candidate: this text is short"
    for shape in reversed(fed):  # largest first: the first that trains enough is the one
        if minutes is None:  # a step budget: time is not the limit
            chosen, why = shape, (f"the largest whose {count_parameters(shape):,} parameters "
                                  f"this text can feed ({PARAMS_PER_CHAR:g} per character)")
            break
        shape, step_rate = _fill_gpu(shape, device, seconds)
        rate = shape.batch_size * shape.seq_len / step_rate * RUN_EFFICIENCY
        updates = minutes * 60 / step_rate * RUN_EFFICIENCY
        chosen = shape
        if updates >= MIN_UPDATES:
            why = (f"the largest whose {count_parameters(shape):,} parameters this text can "
                   f"feed and that makes {updates:,.0f} updates in the budget "
                   f"(at least {MIN_UPDATES:,})")
            break
        why = (f"the smallest candidate; it makes only {updates:,.0f} updates in the budget: "
               f"give more time for a larger model")
    p.choose("train.batch_size", chosen.batch_size, p.reasons.get("train.batch_size", ""))
    for key, value in (("model.num_layers", chosen.num_layers),
                       ("model.hidden_size", chosen.hidden_size),
                       ("model.embedding_dim", chosen.embedding_dim)):
        p.choose(key, value, why if key == "model.hidden_size" else "with the hidden size")
    return chosen, rate


def _fill_gpu(shape: Shape, device: torch.device, seconds) -> tuple[Shape, float]:
    """On a GPU, the batch (of GPU_BATCHES) past which characters per second stop growing."""
    step = seconds(shape)
    if device.type != "cuda":
        return shape, step
    for batch in GPU_BATCHES[1:]:
        bigger = replace(shape, batch_size=batch)
        bigger_step = seconds(bigger)
        if shape.batch_size / step * GPU_GAIN > batch / bigger_step:
            break
        shape, step = bigger, bigger_step
    return shape, step


def _choose_regularisation(p: _Planner, passes: float, parameters: int,
                           train_chars: int) -> None:
    """Dropout by how far the run can memorise the text: the passes over it times the
    parameters per training character. Many passes of a small model (1 x 128 over 4 passes of
    Tiny Shakespeare) overfit nothing, and dropout only slows their learning."""
    exposure = passes * parameters / max(train_chars, 1)
    dropout = next((rate for limit, rate in DROPOUT_BY_EXPOSURE if exposure < limit), MAX_DROPOUT)
    p.choose("model.dropout", dropout,
             f"{passes:.1f} passes over the text with {parameters / max(train_chars, 1):.2f} "
             f"parameters per character (exposure {exposure:.1f}): "
             + ("too little to memorise it" if dropout == 0
                else "it would memorise the text" if dropout == MAX_DROPOUT
                else "some risk of memorising it"))
    p.choose("train.weight_decay", 0.0, "dropout regularises; decay did not help")


def _choose_schedule(p: _Planner, updates: float, minutes: float | None,
                     steps: int | None) -> None:
    hidden = p.value("model.hidden_size")
    lr = LR if hidden <= LR_WIDTH else WIDE_LR
    p.choose("train.lr", lr, f"for a width of {hidden}")
    p.choose("train.lr_schedule", "cosine", "decays to the end of the budget (time or steps)")
    p.choose("train.min_lr_ratio", 0.05, "the cosine ends at 5% of the peak")
    p.choose("train.warmup_steps", int(min(100, max(0, updates * 0.02))),
             "about 2% of the updates, at most 100")
    if steps is None:  # a time budget ends the run; the step count must not end it first
        p.choose("train.max_steps", 10_000_000, "the time budget ends the run")
    every = max(50, int(updates // EVALS // 50 * 50) or 50)
    p.choose("train.eval_every", every, f"about {EVALS} evaluations in the run")
    from charrnn.analysis.evaluate import VAL_SEQ_LEN, VAL_STREAMS
    windows = math.ceil(EVAL_CHARS / (VAL_STREAMS * VAL_SEQ_LEN))
    p.choose("train.eval_batches", windows, f"an evaluation reads at most {EVAL_CHARS:,} "
             f"characters of the validation split (charrnn eval reads it all)")
