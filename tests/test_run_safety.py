"""A run directory's files and schedule: what a refused, forced, branched or resumed run does."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from charrnn.checkpoint import load_checkpoint
from charrnn.config import load_config
from charrnn.training.rundir import RunLock
from charrnn.training.loop import train

from conftest import TINY, run_cli

FAST = ["model.hidden_size=16", "train.threads=1", "train.log_every=1"]
SMALL_FLAGS = ["--threads", "1", "--set", "model.hidden_size=16", "-q"]


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


@pytest.fixture
def small_run(tmp_path) -> Path:
    """A finished 20-step run: evaluated (and previewed) at steps 10 and 20."""
    train(small_config(), run_dir=str(tmp_path / "run"))
    return tmp_path / "run"


def test_a_run_refused_late_leaves_the_old_run_as_it_was(small_run, cli):
    before = hashes(small_run)
    assert {"best.pt", "last.pt", "metrics.jsonl", "samples.jsonl", "config.yaml"} <= set(before)
    bad = ["--set", 'sample.preview_prime="§"']  # a character the text lacks: known only late
    code, _, err = cli("train", TINY, "--out", small_run, "--force", *bad, *SMALL_FLAGS)
    assert code == 2 and "preview_prime" in err, err
    assert hashes(small_run) == before
    code, _, err = cli("train", "--resume", small_run, "--max-steps", "30", *bad, "-q")
    assert code == 2 and "preview_prime" in err, err
    assert hashes(small_run) == before  # config.yaml and the logs too
    code, _, err = cli("train", TINY, "--out", small_run, "--force", "--threads", "100000", "-q")
    assert code == 2 and "--threads: must be <= 1024" in err, err  # torch would crash
    assert hashes(small_run) == before


def test_a_run_in_use_is_called_so_before_force_is_suggested(small_run, cli):
    before = hashes(small_run)
    lock = RunLock(small_run).acquire()
    try:
        for force in ([], ["--force"]):
            code, _, err = cli("train", TINY, "--out", small_run, *force, *SMALL_FLAGS)
            assert code == 2 and "is in use" in err and "--force" not in err, err
    finally:
        lock.release()
    assert hashes(small_run) == before


def test_force_clears_every_file_of_the_old_run(small_run, cli):
    code, _, err = cli("train", TINY, "--out", small_run, "--force", "--max-steps", "10",
                       "--set", "train.eval_every=10", *SMALL_FLAGS)
    assert code == 0, err
    for name in ("metrics.jsonl", "samples.jsonl"):
        steps = [r["step"] for r in records(small_run / name)]
        assert steps and max(steps) == 10 and steps == sorted(steps), (name, steps)


def test_a_time_budget_hint_gives_a_command_that_continues_the_run(tmp_path, cli):
    run = tmp_path / "timed"
    train(small_config(max_steps=10**6, max_minutes=0.002), run_dir=str(run))
    reached = load_checkpoint(run / "last.pt")["step"]
    # the budget spent now is named, whichever stopped the run before
    code, _, err = cli("train", "--resume", run, "--max-steps", str(reached),
                       "--max-minutes", "100")
    assert code == 0 and f"--max-steps {2 * reached}" in err and "--max-minutes" not in err, err
    code, _, err = cli("train", "--resume", run)
    assert code == 0 and "already finished" in err and "--max-minutes" in err, err
    command = shlex.split(err.split("e.g. ", 1)[1].split("\n")[0])
    assert command[:2] == ["charrnn", "train"] and "--max-steps" not in command, command
    code, _, err = cli(*command[1:], "-q")
    assert code == 0, err
    assert load_checkpoint(run / "last.pt")["step"] > reached


def test_a_branch_keeps_the_history_and_the_best_up_to_its_step(tmp_path):
    run = tmp_path / "run"
    train(small_config(max_steps=40), run_dir=str(run))
    for source in ("best.pt", "last.pt"):
        branch = tmp_path / f"branch-{source}"
        state = load_checkpoint(run / source)
        train(small_config(max_steps=50), resume=str(run / source), run_dir=str(branch),
              should_stop=lambda: True)  # stopped before its first step and evaluation
        for name in ("metrics.jsonl", "samples.jsonl"):
            kept = [r for r in records(run / name) if r["step"] <= state["step"]]
            assert kept and records(branch / name) == kept, name
        best = load_checkpoint(run / "best.pt")
        assert load_checkpoint(branch / "best.pt")["step"] == best["step"]
        assert load_checkpoint(branch / "best.pt")["best_val_loss"] == state["best_val_loss"]


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


def test_a_floor_above_the_rate_reached_is_refused_on_resume(at_step_200, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(at_step_200, run)
    before = hashes(run)
    code, _, err = cli("train", "--resume", run, "--set", "train.min_lr_ratio=0.9", "-q")
    assert code == 2 and "train.min_lr_ratio" in err, err
    assert hashes(run) == before


def test_a_config_given_with_resume_is_the_one_resumed_with_checked_like_set(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", str(TINY), "--out", str(run), "--max-steps", "6", "-q",
                   "--set", "train.eval_every=3").returncode == 0
    config = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    config["data"]["path"] = str((TINY.parent / config["data"]["path"]).resolve())
    config["train"].update(lr=0.002, eval_every=3)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = run_cli("train", str(changed), "--resume", str(run), "--max-steps", "8")
    assert proc.returncode == 0, proc.stderr
    assert "changed on resume: train.lr: 0.01 -> 0.002" in proc.stderr
    assert load_checkpoint(run / "last.pt")["config"]["train"]["lr"] == 0.002
    config["model"]["hidden_size"] = 64
    changed.write_text(yaml.safe_dump(config), encoding="utf-8")
    before = (run / "last.pt").read_bytes()
    proc = run_cli("train", str(changed), "--resume", str(run), "--max-steps", "10")
    assert proc.returncode == 2 and "model.hidden_size = 64" in proc.stderr, proc.stderr
    assert (run / "last.pt").read_bytes() == before
