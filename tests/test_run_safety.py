"""A run directory's files and schedule: what a refused, forced, branched or resumed run does."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from charrnn.checkpoint import load_checkpoint
from charrnn.config import load_config
from charrnn.train import train

from conftest import TINY

FAST = ["model.hidden_size=16", "train.threads=1", "train.log_every=1"]


def small_config(*sets: str, **train_overrides):
    cfg = load_config(TINY, [*FAST, "train.max_steps=20", "train.eval_every=10", *sets])
    return replace(cfg, train=replace(cfg.train, **train_overrides))


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop_after(steps: int):
    """A should_stop that lets `steps` steps run."""
    calls = []
    return lambda: calls.append(1) or len(calls) > steps


# --------------------------------------------------------------- the schedule across a resume

@pytest.fixture(scope="module")
def at_step_200(tmp_path_factory) -> Path:
    """configs/tiny.yaml (warm-up 10, cosine to step 300), stopped at step 200."""
    run = tmp_path_factory.mktemp("sched") / "run"
    train(small_config("train.max_steps=300", "train.eval_every=100"), run_dir=str(run),
          should_stop=stop_after(200))
    assert load_checkpoint(run / "last.pt")["step"] == 200
    return run


def lr_by_step(run: Path) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in records(run / "metrics.jsonl") if "lr" in r}


@pytest.mark.parametrize("change", [{"warmup_steps": 250}, {"min_lr_ratio": 0.0},
                                    {"lr_schedule": "constant"},
                                    {"warmup_steps": 250, "max_steps": 400}])
def test_a_schedule_change_on_resume_never_raises_the_rate(at_step_200, tmp_path, change):
    run = tmp_path / "run"
    shutil.copytree(at_step_200, run)
    cfg = small_config("train.max_steps=300", "train.eval_every=100", **change)
    train(cfg, resume=str(run))
    lrs = lr_by_step(run)
    before, after = lrs[200], [lrs[s] for s in range(201, cfg.train.max_steps + 1)]
    assert max(after) <= before * (1 + 1e-9), (before, after[:3])
    assert after == sorted(after, reverse=True)
    if cfg.train.lr_schedule == "cosine":  # and the decay still ends at the floor
        assert after[-1] == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio, abs=1e-5)


def test_raising_lr_on_resume_raises_the_rate_in_proportion(at_step_200, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(at_step_200, run)
    cfg = small_config("train.max_steps=300", "train.eval_every=100", lr=2e-2, warmup_steps=250)
    train(cfg, resume=str(run))
    lrs = lr_by_step(run)
    assert lrs[201] == pytest.approx(2 * lrs[200], rel=0.03)

