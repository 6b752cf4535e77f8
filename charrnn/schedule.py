"""The learning-rate schedule: linear warm-up, then constant or cosine down to lr * min_lr_ratio.

A `Plan` says where the cosine starts: at which step and elapsed time, and at what fraction of
the way from the floor to the peak (`factor`, 1 at the peak). A fresh run starts at the end of
warm-up from the peak. When a resumed run changes its budget (`max_steps` or `max_minutes`),
`replan` starts a new cosine at the current step from the current factor: the learning rate
never jumps up, and decays from where it stands down to the floor over the new span.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plan:
    step: int
    elapsed: float
    factor: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict | None) -> "Plan | None":
        return cls(int(raw["step"]), float(raw["elapsed"]), float(raw["factor"])) if raw else None


def initial_plan(cfg) -> Plan:
    return Plan(cfg.train.warmup_steps, 0.0, 1.0)


def cosine_factor(step: int, cfg, elapsed: float, plan: Plan) -> float:
    """How far the cosine stands above the floor (1: the peak, 0: the floor).

    With a time budget (`max_minutes`), it follows whichever budget runs out first.
    """
    t = cfg.train
    progress = (step - plan.step) / max(1, t.max_steps - plan.step)
    if t.max_minutes:
        budget = t.max_minutes * 60 - plan.elapsed
        progress = max(progress, (elapsed - plan.elapsed) / budget if budget > 0 else 1.0)
    progress = min(1.0, max(0.0, progress))
    return plan.factor * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, cfg, elapsed: float = 0.0, plan: Plan | None = None) -> float:
    """Learning rate for `step` (0-based) of a run that has trained for `elapsed` seconds."""
    t = cfg.train
    plan = plan or initial_plan(cfg)
    if step < plan.step:  # warm-up (only a fresh plan starts after it)
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    floor = t.lr * t.min_lr_ratio
    return floor + (t.lr - floor) * cosine_factor(step, cfg, elapsed, plan)


def replan(step: int, elapsed: float, old_cfg, new_cfg, plan: Plan | None) -> Plan | None:
    """The plan a resumed run follows: a new one when its budget changed past warm-up."""
    old, new = old_cfg.train, new_cfg.train
    current = plan or initial_plan(old_cfg)
    if ((old.max_steps, old.max_minutes) == (new.max_steps, new.max_minutes)
            or new.lr_schedule != "cosine" or step < current.step):
        return plan
    factor = (cosine_factor(step, old_cfg, elapsed, current) if old.lr_schedule == "cosine"
              else 1.0)
    return Plan(step, elapsed, factor)


def describe(plan: Plan, cfg) -> str:
    """One line for the log: where the re-planned cosine starts and where it ends."""
    from charrnn.report import plural
    t = cfg.train
    ends = f"at step {t.max_steps:,}"
    if t.max_minutes:
        ends += (f" or after {plural(t.max_minutes, 'minute', 'g')} of training, whichever "
                 f"comes first")
    now, floor = f"{lr_at(plan.step, cfg, plan.elapsed, plan):.3g}", f"{t.lr * t.min_lr_ratio:.3g}"
    if now == floor:  # a finished run, extended: nothing is left to decay
        return (f"the budget changed; the learning rate is already at its floor, {floor}, and "
                f"stays there to the new end {ends}")
    return (f"the budget changed, so the learning rate continues its decay from {now} at step "
            f"{plan.step:,} down to {floor} {ends}")
