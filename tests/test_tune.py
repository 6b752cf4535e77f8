"""charrnn tune: successive halving around the plan, a study that resumes, the best kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import FOODCHAIN, ROOT, run_cli

pytest.importorskip("optuna", reason="the tune extra (make install installs it)")


@pytest.mark.parametrize("text,minutes", [("90s", 1.5), ("20m", 20), ("1.5h", 90), ("7", 7)])
def test_budgets_read_as_durations(text, minutes):
    from charrnn.cli.tune import parse_minutes
    assert parse_minutes(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "0m", "soon", "5d", "-3m"])
def test_a_bad_budget_is_one_error_line(text, cli):
    code, out, err = cli("tune", "--data", str(FOODCHAIN), "--budget", text)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "--budget" in err, err


@pytest.mark.parametrize("args, message", [
    (["--budget", "30s"], "under a trial's default minute"),
    (["--budget", "10s", "--max-minutes", "5"], "--max-minutes 5 is more than the whole budget"),
])
def test_a_trial_longer_than_the_budget_is_one_error_line(args, message, cli):
    code, out, err = cli("tune", "--data", str(FOODCHAIN), *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err


def test_without_optuna_the_error_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code, _, err = cli("tune", "--data", str(FOODCHAIN), "--budget", "1m")
    assert code == 1 and "charrnn[tune]" in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_a_search_starts_from_the_plan_keeps_the_best_and_resumes(tmp_path):
    out = tmp_path / "tune"
    args = ("tune", "--data", str(FOODCHAIN), "--budget", "0.5m", "--max-minutes", "0.1",
            "--set", "model.embedding_dim=16", "--out", str(out), "--json")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    trials = result["trials"]
    plan = trials[0]
    assert plan["plan"] and plan["state"] == "complete" and len(trials) >= 2
    assert result["best_val_loss"] <= plan["val_loss"]  # never worse than the plan
    assert {t["params"].get("model.embedding_dim") for t in trials} == {None}  # fixed: unsearched
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["embedding_dim"] == 16 and best["train"]["plan"] is False
    assert (out / "best" / "best.pt").is_file() and (out / "study.db").is_file()
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert all(not (out / "trials" / f"{t['trial']:03d}").exists() for t in pruned)
    rerun = run_cli("train", str(out / "best.yaml"), "--max-steps", "3",
                    "--out", str(tmp_path / "again"))
    assert rerun.returncode == 0, rerun.stderr  # runnable as it is
    again = json.loads(run_cli(*args, cwd=tmp_path).stdout)  # the same command resumes
    assert len(again["trials"]) > len(trials)
    assert [t["trial"] for t in again["trials"][:len(trials)]] == [t["trial"] for t in trials]


@pytest.mark.slow
def test_ctrl_c_keeps_what_is_done_and_prints_the_best(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "tune", "--data", str(FOODCHAIN),
                             "--budget", "5m", "--max-minutes", "0.1",
                             "--out", str(tmp_path / "tune")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the plan's trial is done once the first one starts
        if list((tmp_path / "tune" / "trials").glob("001")):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "best: trial 0" in out and "Traceback" not in err
    assert (tmp_path / "tune" / "best.yaml").is_file()
