"""train.log_to: the metrics of metrics.jsonl also go to TensorBoard, read back here."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from charrnn.config import load_config
from charrnn.errors import ConfigError, MissingDependency
from conftest import TINY, run_cli

TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_bpc": "bpc/val", "lr": "lr",
        "chars_per_sec": "chars_per_sec"}


def _train(out, *args):
    proc = run_cli("train", str(TINY), "--out", str(out), "--threads", "1", "--quiet",
                   "--set", "train.log_to=[tensorboard]", "--set", "train.log_every=3",
                   "--set", "train.eval_every=6", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def _board(run) -> dict:
    """Every scalar of the run's TensorBoard events: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _metrics(run) -> dict:
    """metrics.jsonl as {tag: [(step, value), ...]}."""
    found: dict = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, tag in TAGS.items():
            if key in record:
                found.setdefault(tag, []).append((record["step"], record[key]))
    return found


def _same(board: dict, metrics: dict) -> None:
    assert sorted(board) == sorted(metrics) == sorted(TAGS.values())
    for tag, points in metrics.items():
        assert [s for s, _ in board[tag]] == [s for s, _ in points], tag
        assert [v for _, v in board[tag]] == pytest.approx([v for _, v in points], rel=1e-6)


def test_tensorboard_events_hold_the_metrics_of_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    _train(tmp_path / "run", "--max-steps", "12")
    board, metrics = _board(tmp_path / "run"), _metrics(tmp_path / "run")
    _same(board, metrics)
    assert [s for s, _ in board["loss/train"]] == [3, 6, 9, 12]
    assert [s for s, _ in board["loss/val"]] == [6, 12]


@pytest.mark.slow
def test_a_resume_drops_the_events_past_its_step_and_force_clears_them(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    _train(run, "--max-steps", "6")
    shutil.copy(run / "last.pt", tmp_path / "six.pt")
    _train(run, "--resume", str(run), "--max-steps", "12")
    shutil.copy(tmp_path / "six.pt", run / "six.pt")
    _train(run, "--resume", str(run / "six.pt"), "--max-steps", "9", "--force")  # back to 6
    board = _board(run)
    _same(board, _metrics(run))
    assert [s for s, _ in board["loss/train"]] == [3, 6, 9]
    _train(run, "--max-steps", "3", "--force")  # a new run over the old one
    assert [s for s, _ in _board(run)["loss/train"]] == [3]


def test_asking_for_tensorboard_without_it_fails_before_training(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    code, out, err = cli("train", TINY, "--out", tmp_path / "run", "--max-steps", "3",
                         "--set", "train.log_to=[tensorboard]")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: ") and "pip install 'charrnn[tensorboard]'" in err
    assert not (tmp_path / "run").exists()
    import charrnn
    with pytest.raises(MissingDependency, match=r"charrnn\[tensorboard\]"):
        charrnn.train(TINY, out=tmp_path / "run", max_steps=3, log_to=["tensorboard"])
    assert not (tmp_path / "run").exists()


def test_log_to_takes_a_list_of_known_sinks_or_one_name():
    assert load_config(TINY).train.log_to == []
    assert load_config(TINY, ["train.log_to=tensorboard"]).train.log_to == ["tensorboard"]
    assert load_config(TINY, ["train.log_to=[tensorboard, tensorboard]"]).train.log_to == \
        ["tensorboard"]
    with pytest.raises(ConfigError, match="train.log_to: 'wandb' is not one of tensorboard"):
        load_config(TINY, ["train.log_to=[wandb]"])
    with pytest.raises(ConfigError, match="train.log_to: expected a list of tensorboard"):
        load_config(TINY, ["train.log_to=3"])
