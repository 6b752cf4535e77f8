"""Training that never loses work: exact resume, kills at any moment, divergence, one writer."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.config import load_config
from charrnn.errors import RunDirError, TrainingFailed
from charrnn.training.rundir import RunLock
from charrnn.training.loop import lr_at, train

from conftest import ROOT, TINY, run_cli


def test_messages_count_in_the_singular_and_a_decay_at_its_floor_says_so(capsys):
    from charrnn.report import Reporter
    from charrnn.training.schedule import Plan, describe, replan
    start = {"run_dir": "runs/x", "device": "cpu", "threads": 1, "model": "lstm",
             "parameters": 1000, "vocab_size": 20, "train_chars": 9000, "val_chars": 1000,
             "start_step": 0, "max_steps": 100, "max_minutes": 1.0, "elapsed": 0.0,
             "resumed_from": None, "changes": [], "cached": False}
    Reporter().training_event("start", start)
    Reporter().training_event("start", {**start, "threads": 2, "max_minutes": 2.0})
    first, second = capsys.readouterr().err.splitlines()
    assert "(1 thread) " in first and "or for 1 minute, whichever" in first, first
    assert "(2 threads) " in second and "or for 2 minutes, whichever" in second, second

    cfg = small_config(Path("."), max_steps=40, lr=1.0e-2, warmup_steps=0, min_lr_ratio=0.1,
                       max_minutes=1.0)
    longer = replace(cfg, train=replace(cfg.train, max_steps=60))
    at_floor = replan(40, 0.0, cfg, longer, None)  # a finished run given 20 more steps
    note = describe(at_floor, longer)
    assert "down to" not in note and "0.001" in note and "step 60" in note, note
    assert "after 1 minute of training" in note, note
    halfway = describe(replan(20, 0.0, cfg, longer, None), longer)
    assert "continues its decay from 0.00" in halfway and "down to 0.001" in halfway, halfway
    assert describe(Plan(20, 0.0, 0.5), replace(longer, train=replace(
        longer.train, max_minutes=None))).endswith("at step 60")


def small_config(tmp_path: Path, **train_overrides):
    cfg = load_config(TINY, ["model.num_layers=2", "model.dropout=0.1", "train.log_every=1",
                             "train.eval_every=20", "model.hidden_size=32", "train.threads=1"])
    return replace(cfg, train=replace(cfg.train, **train_overrides))


def train_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = (load_checkpoint(p / "last.pt")["model"] for p in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("schedule, missing", [
    ("constant", ()), ("cosine", ()),
    ("cosine", ("data", "schedule", "scaler")),  # as written before those keys existed
])
def test_resume_is_exact(tmp_path, schedule, missing):
    full = small_config(tmp_path, max_steps=60, lr_schedule=schedule)
    train(full, run_dir=str(tmp_path / "a"))
    if schedule == "constant":  # stop at max_steps=30, then resume with max_steps=60
        train(replace(full, train=replace(full.train, max_steps=30)), run_dir=str(tmp_path / "b"))
    else:  # a cosine schedule depends on max_steps, so stop it from outside at step 30
        steps = []
        train(full, run_dir=str(tmp_path / "b"), should_stop=lambda: len(steps) >= 30,
              on_event=lambda kind, info: steps.append(1) if kind == "step" else None)
    state = load_checkpoint(tmp_path / "b" / "last.pt")
    assert state["step"] == 30
    if missing:
        for key in (*missing, "path"):
            del state[key]
        save_checkpoint(state, tmp_path / "b" / "last.pt")
    result = train(full, resume=str(tmp_path / "b"))
    assert result.step == 60
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert [s for s, _ in a] == list(range(1, 61)) and a == b  # bit for bit
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_learning_rate_schedule():
    cfg = small_config(Path("."), max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(100, cfg) == pytest.approx(0.1)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    timed = replace(cfg, train=replace(cfg.train, max_minutes=1.0, max_steps=10**9))
    assert lr_at(20, timed, elapsed=60.0) == pytest.approx(0.1)  # the time budget ran out


def test_resume_refuses_changes_that_cannot_apply(tiny_run, run_copy):
    before = (run_copy / "last.pt").read_bytes()
    proc = run_cli("train", "--resume", str(run_copy), "--set", "model.hidden_size=64")
    assert proc.returncode == 2 and "model.hidden_size" in proc.stderr
    assert (run_copy / "last.pt").read_bytes() == before
    proc = run_cli("train", "--resume", str(run_copy), "--set", "train.lr=1e-3",
                   "--max-steps", "310")
    assert proc.returncode == 0, proc.stderr
    assert "changed on resume: train.lr: 0.01 -> 0.001" in proc.stderr
    assert "from step 300 to 310" in proc.stderr


def test_divergence_stops_without_overwriting(run_copy):
    before = {n: (run_copy / n).read_bytes() for n in ("last.pt", "best.pt")}
    proc = run_cli("train", "--resume", str(run_copy), "--set", "train.lr=1e38",
                   "--max-steps", "400")
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: step 30") and "lower train.lr" in error
    assert {n: (run_copy / n).read_bytes() for n in before} == before


def test_skip_nonfinite_allows_a_few_bad_steps(tmp_path):
    proc = run_cli("train", str(TINY), "--out", str(tmp_path / "s"), "--set", "train.lr=1e38",
                   "--set", "train.skip_nonfinite=2", "--max-steps", "50")
    assert proc.returncode == 1
    assert proc.stderr.count("step skipped") == 2 and "not finite" in proc.stderr


@pytest.mark.slow
def test_one_writer_per_run_directory(run_copy):
    lock = RunLock(run_copy).acquire()
    try:
        proc = run_cli("train", "--resume", str(run_copy), "--max-steps", "310")
        assert proc.returncode == 2
        assert f"is in use: process {__import__('os').getpid()}" in proc.stderr
    finally:
        lock.release()
    (run_copy / "train.lock").write_text("999999\n")  # left by a dead process: taken over
    proc = run_cli("train", "--resume", str(run_copy), "--max-steps", "310", "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (run_copy / "train.lock").exists()


def test_library_refuses_to_overwrite_a_run(tiny_run):
    cfg = load_config(TINY)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(cfg, run_dir=str(tiny_run))


def test_nonfinite_weights_are_never_saved(tmp_path):
    # one weight of the last layer turns infinite in the optimizer step just before the step-20
    # save, while every loss and gradient so far was finite: only the weights can tell
    steps = []

    def poison(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 20:
            with torch.no_grad():
                optimizer.param_groups[0]["params"][-1][3] = math.inf

    hook = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(TrainingFailed, match="step 20: the weights are no longer finite"):
            train(small_config(tmp_path, max_steps=30, save_every=10), run_dir=str(tmp_path / "n"))
    finally:
        hook.remove()
    assert len(steps) == 20 and load_checkpoint(tmp_path / "n" / "last.pt")["step"] == 10
    assert not (tmp_path / "n" / "best.pt").exists()  # no evaluation before step 20


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "kill"
    args = [sys.executable, "-m", "charrnn", "train", str(TINY), "--out", str(out),
            "--max-steps", "100000", "--threads", "1", "--set", "train.save_every=1",
            "--set", "train.log_every=1", "--set", "train.eval_every=7"]
    rng = random.Random(0)
    steps = []
    for attempt in range(16):
        cmd = args if attempt == 0 else args[:4] + ["--resume", str(out)] + args[7:]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if line.startswith("step "):
                break
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(out / "last.pt")  # never broken
        steps.append(state["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]
    proc = run_cli("train", "--resume", str(out), "--max-steps", str(steps[-1] + 3), "-q")
    assert proc.returncode == 0, proc.stderr
    assert not list(out.glob(".*.tmp-*"))  # half-written files of killed runs are cleaned up


def test_budget_change_on_resume_replans_the_schedule(tmp_path):
    cfg = small_config(tmp_path, max_steps=40, lr=1.0e-2, warmup_steps=0, min_lr_ratio=0.1)
    longer = replace(cfg, train=replace(cfg.train, max_steps=60))
    floor = 1.0e-3
    train(cfg, run_dir=str(tmp_path / "done"))  # finished: the learning rate is at its floor
    notes = []
    train(longer, resume=str(tmp_path / "done"),
          on_event=lambda kind, info: notes.append(info["message"]) if kind == "note" else None)
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "done" / "metrics.jsonl")
                                           .read_text().splitlines()) if "lr" in r}
    assert max(lrs[s] for s in range(41, 61)) == pytest.approx(floor)  # it never jumps up
    assert any("already at its floor, 0.001" in n and "step 60" in n for n in notes), notes

    calls = []  # stopped half way, then given 20 more steps: the decay goes on from where it is
    train(cfg, run_dir=str(tmp_path / "half"), should_stop=lambda: calls.append(1) or
          len(calls) > 20)
    train(longer, resume=str(tmp_path / "half"))
    records = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text()
               .splitlines()]
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[20] == pytest.approx(lr_at(20, cfg))  # the old plan's rate at the resume step
    assert lrs == sorted(lrs, reverse=True) and floor < lrs[-1] < 1.01 * floor


def test_replanned_rate_is_continuous_and_ends_at_the_floor():
    from charrnn.training.schedule import initial_plan, replan
    cfg = small_config(Path("."), max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    longer = replace(cfg, train=replace(cfg.train, max_steps=145))
    plan = replan(55, 0.0, cfg, longer, None)
    assert lr_at(55, longer, plan=plan) == pytest.approx(lr_at(55, cfg)) == pytest.approx(0.55)
    assert lr_at(145, longer, plan=plan) == pytest.approx(0.1)
    assert replan(55, 0.0, cfg, cfg, None) is None  # same budget: same plan, bit-exact resume
    assert replan(5, 0.0, cfg, longer, None) is None  # still warming up: nothing to re-plan
    timed = replace(cfg, train=replace(cfg.train, max_minutes=2.0, max_steps=10**9))
    plan = replan(30, 60.0, replace(timed, train=replace(timed.train, max_minutes=1.0)), timed,
                  initial_plan(timed))
    assert lr_at(30, timed, 60.0, plan) == pytest.approx(0.1)  # the old time budget had run out


def test_log_window_survives_a_resume(tmp_path):
    cfg = small_config(tmp_path, max_steps=30, log_every=7, eval_every=100)
    train(cfg, run_dir=str(tmp_path / "a"))
    calls = []
    train(cfg, run_dir=str(tmp_path / "b"), should_stop=lambda: calls.append(1) or
          len(calls) > 10)  # stops at step 10, mid-window
    train(cfg, resume=str(tmp_path / "b"))
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")


def nonfinite_at(monkeypatch, bad_calls: set[int]) -> None:
    """Make the gradient norm of the given steps (1-based, counted from now) not finite."""
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def clip(params, max_norm):
        calls.append(1)
        norm = real(params, max_norm)
        return norm * math.nan if len(calls) in bad_calls else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)


def test_skipped_step_keeps_its_eval_and_counts_across_resume(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, max_steps=10, eval_every=5, skip_nonfinite=1)
    nonfinite_at(monkeypatch, {5})
    train(cfg, run_dir=str(tmp_path / "s"))
    records = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [5, 10]  # step 5's eval is kept
    assert load_checkpoint(tmp_path / "s" / "last.pt")["skipped_steps"] == 1
    nonfinite_at(monkeypatch, {3})
    with pytest.raises(TrainingFailed, match="step 13: the loss or gradient is not finite"):
        train(replace(cfg, train=replace(cfg.train, max_steps=20)), resume=str(tmp_path / "s"))


def test_crash_between_best_and_last_keeps_them_consistent(tmp_path, monkeypatch):
    import charrnn.training.loop as train_module

    class Crash(BaseException):
        pass

    real, written = train_module.save_checkpoint, []

    def save(payload, path):
        if len(written) >= 2 and written[-1][1] == payload["step"] and payload["step"] > 20:
            raise Crash  # the second file of a pair, after the first evaluation
        real(payload, path)
        written.append((Path(path).name, payload["step"]))

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    with pytest.raises(Crash):
        train(small_config(tmp_path, max_steps=200, eval_every=20), run_dir=str(tmp_path / "c"))
    last, best = (load_checkpoint(tmp_path / "c" / n) for n in ("last.pt", "best.pt"))
    assert best["val_loss"] <= last["best_val_loss"]  # the best last.pt records, best.pt holds


def test_resume_refuses_another_text_unless_named(tmp_path):
    text = (ROOT / "data" / "foodchain.txt").read_text()
    corpus = tmp_path / "food.txt"
    corpus.write_text(text)
    cfg = small_config(tmp_path, max_steps=20)
    cfg = replace(cfg, data=replace(cfg.data, path=str(corpus)))
    train(cfg, run_dir=str(tmp_path / "r"))
    state = load_checkpoint(tmp_path / "r" / "last.pt")
    assert state["data"]["chars"] == len(text) and len(state["data"]["sha256"]) == 64
    edited = "".join(reversed(text.splitlines(keepends=True)))  # same characters, same length
    corpus.write_text(edited)
    longer = replace(cfg, train=replace(cfg.train, max_steps=30))
    with pytest.raises(RunDirError, match="not the text this run was trained on.*--data"):
        train(longer, resume=str(tmp_path / "r"))
    (tmp_path / "new.txt").write_text(edited)
    notes = []
    result = train(replace(longer, data=replace(cfg.data, path=str(tmp_path / "new.txt"))),
                   resume=str(tmp_path / "r"),
                   on_event=lambda kind, info: notes.append(info["message"])
                   if kind == "note" else None)
    assert result.step == 30
    assert any("another text" in n and "empty hidden state" in n for n in notes), notes


def test_resume_vocab_error_names_the_characters(tmp_path, run_copy):
    text = tmp_path / "more.txt"
    text.write_text((ROOT / "data" / "foodchain.txt").read_text().replace("sharks", "sharks§"))
    proc = run_cli("train", "--resume", str(run_copy), "--data", str(text), "--max-steps", "310")
    assert proc.returncode == 2 and "'§'" in proc.stderr, proc.stderr


RACER = r"""
import os, sys, time
import charrnn.training.rundir as rundir
from charrnn.errors import RunDirError

real = rundir.fcntl

class SlowFlock:  # widens the gap between opening the lock file and locking it
    LOCK_EX, LOCK_NB, LOCK_UN = real.LOCK_EX, real.LOCK_NB, real.LOCK_UN

    @staticmethod
    def flock(fd, op):
        time.sleep(0.03)
        return real.flock(fd, op)

rundir.fcntl = SlowFlock
run, marker, wins, clashes = sys.argv[1], os.path.join(sys.argv[1], "inside"), 0, 0
end = time.monotonic() + 2.0
while time.monotonic() < end:
    try:
        lock = rundir.RunLock(run).acquire()
    except RunDirError:
        continue
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        clashes += 1
    else:
        wins += 1
        time.sleep(0.05)
        os.close(fd)
        os.unlink(marker)
    lock.release()
print(wins, clashes)
"""


def test_three_processes_racing_for_one_run_directory(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    results = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert sum(clashes for _, clashes in results) == 0, results  # never two holders at once
    assert sum(wins for wins, _ in results) > 3, results


def test_lock_and_existing_run_are_checked_before_anything_is_read(tmp_path, run_copy):
    cfg = load_config(TINY, ["data.path=missing.txt"])
    with pytest.raises(RunDirError, match="already holds a run"):  # not "data path not found"
        train(cfg, run_dir=str(run_copy))
    (run_copy / "last.pt").write_bytes(b"not a checkpoint")
    lock = RunLock(run_copy).acquire()
    try:
        with pytest.raises(RunDirError, match="is in use"):  # not "not a readable checkpoint"
            train(cfg, resume=str(run_copy))
    finally:
        lock.release()


@pytest.mark.slow
def test_validation_loss_is_the_same_in_training_and_in_eval(tmp_path):
    text = (ROOT / "data" / "tinyshakespeare.txt").read_text()[:60_000]
    (tmp_path / "shk.txt").write_text(text)
    out = tmp_path / "run"
    proc = run_cli("train", str(TINY), "--data", str(tmp_path / "shk.txt"), "--out", str(out),
                   "--max-steps", "20", "--threads", "1", "-q", "--set", "data.val_fraction=0.5",
                   "--set", "train.batch_size=4", "--set", "train.eval_every=20")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    proc = run_cli("eval", "-c", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["loss"] == pytest.approx(info["best_val_loss"], rel=1e-6)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`charrnn ARGV` in this process: exit code, stdout, stderr."""
    from charrnn.cli.app import main
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def small_run(tmp_path: Path) -> Path:
    """A finished 40-step run (evaluated at steps 20 and 40) trained in this process."""
    train(small_config(tmp_path, max_steps=40), run_dir=str(tmp_path / "small"))
    return tmp_path / "small"


def test_resume_from_an_earlier_best_needs_a_new_out_or_force(tmp_path, capsys):
    from charrnn.checkpoint import save_checkpoint
    run = small_run(tmp_path)
    best = load_checkpoint(run / "best.pt")
    best["step"] = 20  # best.pt from before the run's last steps
    save_checkpoint({k: v for k, v in best.items() if k != "path"}, run / "best.pt")
    before = {n: (run / n).read_bytes() for n in ("last.pt", "metrics.jsonl")}
    code, _, err = cli(capsys, "train", "--resume", str(run / "best.pt"), "--max-steps", "50")
    assert code == 2 and "step 40" in err and "--out" in err and "--force" in err, err
    assert {n: (run / n).read_bytes() for n in before} == before
    branch = tmp_path / "branch"
    code, _, err = cli(capsys, "train", "--resume", str(run / "best.pt"), "--max-steps", "30",
                       "--out", str(branch), "-q")
    assert code == 0, err
    assert load_checkpoint(branch / "last.pt")["step"] == 30
    assert {n: (run / n).read_bytes() for n in before} == before


def test_out_is_not_the_current_folder_nor_the_data_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "food.txt").write_text((ROOT / "data" / "foodchain.txt").read_text())
    monkeypatch.chdir(tmp_path)
    for out in ("", ".", "texts", str(tmp_path / "texts")):
        code, _, err = cli(capsys, "train", str(TINY), "--data", "texts/food.txt", "--out", out)
        assert code == 2 and err.startswith("error: ") and "--out" in err, (out, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["food.txt", "texts"]


def test_resume_below_the_step_reached_or_of_a_finished_run(tmp_path, capsys):
    run = small_run(tmp_path)
    before = {n: (run / n).read_bytes() for n in ("last.pt", "metrics.jsonl")}
    code, _, err = cli(capsys, "train", "--resume", str(run), "--max-steps", "10")
    assert code == 2 and "--max-steps" in err and "10" in err and "40" in err, err
    code, _, err = cli(capsys, "train", "--resume", str(run))
    assert code == 0 and "finished" in err and "--max-steps" in err, err
    assert {n: (run / n).read_bytes() for n in before} == before


def test_info_says_why_a_run_stopped(tmp_path, capsys):
    code, out, _ = cli(capsys, "info", str(small_run(tmp_path) / "last.pt"))
    assert code == 0 and "stopped      at max_steps (step 40)" in out, out
    calls = []
    train(small_config(tmp_path, max_steps=50), run_dir=str(tmp_path / "i"),
          should_stop=lambda: calls.append(1) or len(calls) > 30)
    code, out, _ = cli(capsys, "info", str(tmp_path / "i" / "last.pt"), "--json")
    assert json.loads(out)["stopped_by"] == "interrupt"
    cfg = small_config(tmp_path, max_steps=10**6, max_minutes=0.001)
    train(cfg, run_dir=str(tmp_path / "m"))  # may pass step 20 on a fast machine: best.pt then
    code, out, _ = cli(capsys, "info", str(tmp_path / "m" / "last.pt"))  # holds an earlier step
    assert "stopped      by the time budget (max_minutes 0.001)" in out, out


def test_progress_follows_the_time_budget_when_it_ends_first(capsys):
    from charrnn.report import Reporter
    reporter = Reporter()
    start = {"run_dir": "runs/x", "device": "cpu", "threads": 1, "model": "lstm",
             "parameters": 1000, "vocab_size": 20, "train_chars": 9000, "val_chars": 1000,
             "start_step": 0, "max_steps": 100000, "max_minutes": 0.15, "elapsed": 0.0,
             "resumed_from": None, "changes": [], "cached": False}
    reporter.training_event("start", start)
    reporter.training_event("step", {"step": 1100, "max_steps": 100000, "train_loss": 2.0,
                                     "lr": 1e-3, "chars_per_sec": 1e5, "time": 3.0})
    err = capsys.readouterr().err
    assert "to 100000 or for 0.15 minutes, whichever comes first" in err, err
    assert "step 1100/~3,300 " in err, err  # 1,100 steps in 3 s, 6 s of the budget left
