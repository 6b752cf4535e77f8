"""`charrnn plot`: loss curves in the terminal (colour only on a terminal) and as PNG/SVG."""

from __future__ import annotations

import json
import math
import sys

import pytest

from charrnn.cli import app as cli
from charrnn.analysis.plot import load_curves, summary

from conftest import run_cli
from ptyutil import ESC, run_in_pty


def fake_run(folder, train, val, *, junk=False):
    """A run directory whose metrics.jsonl holds these (step, loss) points."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": s, "train_loss": v, "lr": 0.01, "time": s * 0.6})
             for s, v in train]
    lines += [json.dumps({"step": s, "val_loss": v, "time": s * 0.6 + 0.1}) for s, v in val]
    if junk:
        lines.append('{"step": 99, "train_lo')  # a line cut short by a crash
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def two_runs(tmp_path):
    a = fake_run(tmp_path / "lstm", [(10, 3.0), (20, 2.0), (30, 1.5)], [(20, 2.2), (30, 1.8)],
                 junk=True)
    b = fake_run(tmp_path / "gru", [(10, 3.2), (20, 2.5), (30, 2.0)], [(30, 2.1)])
    return a, b


def test_curves_and_summary_in_nats_and_bits(two_runs):
    curves = load_curves(two_runs[0])
    assert [p[0] for p in curves.train] == [10, 20, 30]  # the cut line is skipped
    series = curves.series("time", bits=True)
    assert series[0].x == pytest.approx([0.1, 0.2, 0.3])  # minutes
    assert series[1].y == pytest.approx([2.2 / math.log(2), 1.8 / math.log(2)])
    assert summary([curves]) == ["lstm  train 1.5000 at step 30  best val 1.8000 at step 30 "
                                 "(nats/char)"]


def test_plot_into_a_pipe_is_plain_text_with_a_legend(two_runs):
    proc = run_cli("plot", *map(str, two_runs), "--bits", env={"COLUMNS": "90"})
    assert proc.returncode == 0, proc.stderr
    assert ESC not in proc.stdout
    for label in ("lstm train", "lstm val", "gru train", "gru val", "bits/char", "step"):
        assert label in proc.stdout
    chart = proc.stdout.splitlines()
    assert max(len(line) for line in chart) == 90  # the width follows the terminal's
    assert f"best val {1.8 / math.log(2):.4f} at step 30" in proc.stdout


def test_plot_in_a_terminal_has_colour_and_its_width(two_runs):
    out = run_in_pty(["plot", str(two_runs[0]), "--x", "time"], columns=120)
    assert ESC + "[" in out and "minutes" in out
    out = run_in_pty(["plot", str(two_runs[0])], columns=70, env={"NO_COLOR": "1"})
    assert ESC not in out and "lstm train" in out
    assert max(len(line) for line in out.splitlines()) == 70


@pytest.mark.parametrize("suffix,magic", [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_plot_writes_an_image(two_runs, tmp_path, suffix, magic):
    out = tmp_path / f"loss.{suffix}"
    proc = run_cli("plot", *map(str, two_runs), "--out", str(out))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert magic in out.read_bytes()[:400]
    assert not list(tmp_path.glob(".*.tmp-*"))


@pytest.mark.parametrize("args,message", [
    (["{tmp}/nowhere"], "no metrics.jsonl there"),
    (["{run}", "--out", "{tmp}/loss.jpg"], "must end in .png or .svg"),
    (["{run}", "--out", "{tmp}/no/such/loss.png"], "does not exist"),
    (["{run}", "--x", "epoch"], "epoch"),
])
def test_plot_bad_input_is_one_error_line(two_runs, tmp_path, capsys, args, message):
    argv = ["plot"] + [a.format(tmp=tmp_path, run=two_runs[0]) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1


def test_a_missing_plotting_library_names_the_install_command(two_runs, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotext", None)  # import plotext now fails
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", str(two_runs[0])])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err == "error: plotext is not installed; install the plotting extra with: " \
                  "pip install 'charrnn[plot]'\n"
