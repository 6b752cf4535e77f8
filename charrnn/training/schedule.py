"""The learning-rate schedule: linear warm-up, then constant or cosine down to lr * min_lr_ratio.

A `Plan` says where the cosine starts: at which step and elapsed time, and at what fraction of
the way from the floor to the peak (`factor`, 1 at the peak). A fresh run starts at the end of
warm-up from the peak. When a resumed run changes its budget or its schedule (any key of
`SCHEDULE_KEYS`) past its first warm-up, `replan` starts a new plan at the current step from the
rate where it stands: the learning rate never jumps up (only a larger `train.lr` raises it, in
proportion), and a cosine decays from there down to the floor over the new span, while a
constant schedule stays there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from charrnn.errors import ConfigError

SCHEDULE_KEYS = ("max_steps", "max_minutes", "warmup_steps", "min_lr_ratio", "lr_schedule")


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
    if t.lr_schedule == "constant" and plan.factor == 1.0:
        return t.lr
    floor = t.lr * t.min_lr_ratio
    factor = plan.factor if t.lr_schedule == "constant" else cosine_factor(step, cfg, elapsed,
                                                                           plan)
    return floor + (t.lr - floor) * factor


def replan(step: int, elapsed: float, old_cfg, new_cfg, plan: Plan | None) -> Plan | None:
    """The plan a resumed run follows: a new one, from the rate where it stands, when a key of
    its schedule changed past the first warm-up (during it, the new warm-up applies)."""
    old, new = old_cfg.train, new_cfg.train
    current = plan or initial_plan(old_cfg)
    unchanged = all(getattr(old, k) == getattr(new, k) for k in SCHEDULE_KEYS)
    constant = (old.lr_schedule, new.lr_schedule) == ("constant", "constant")
    if (unchanged or step < current.step
            or (constant and old.min_lr_ratio == new.min_lr_ratio)):  # it stays where it is
        return plan
    level = lr_at(step, old_cfg, elapsed, current) / old.lr  # as a fraction of train.lr
    ratio = new.min_lr_ratio
    if level < ratio * (1 - 1e-9):
        raise ConfigError(f"cannot resume with train.min_lr_ratio = {ratio:g}: the learning "
                          f"rate has decayed to {level:.3g} x train.lr, below that floor, and "
                          f"it never rises on a resume; give train.min_lr_ratio <= "
                          f"{math.floor(level * 1000) / 1000:g}, or start a new run")
    factor = 1.0 if ratio >= 1 else min(1.0, max(0.0, (level - ratio) / (1 - ratio)))
    return Plan(step, elapsed, factor)


def describe(plan: Plan, cfg) -> str:
    """One line for the log: where the re-planned cosine starts and where it ends."""
    from charrnn.report import plural
    t = cfg.train
    if t.lr_schedule == "constant":
        return (f"the schedule changed, so the learning rate stays at "
                f"{lr_at(plan.step, cfg, plan.elapsed, plan):.3g} from step {plan.step:,}")
    ends = f"at step {t.max_steps:,}"
    if t.max_minutes:
        ends += (f" or after {plural(t.max_minutes, 'minute', 'g')} of training, whichever "
                 f"comes first")
    now, floor = f"{lr_at(plan.step, cfg, plan.elapsed, plan):.3g}", f"{t.lr * t.min_lr_ratio:.3g}"
    if now == floor:  # a finished run, extended: nothing is left to decay
        return (f"the schedule changed; the learning rate is already at its floor, {floor}, "
                f"and stays there to the new end {ends}")
    return (f"the schedule changed, so the learning rate continues its decay from {now} at "
            f"step {plan.step:,} down to {floor} {ends}")
