"""Dynamic evaluation (charrnn.analysis.adapt, `charrnn eval --adapt`): the model learns from each window
after scoring it, in a copy; the checkpoint and the caller's model stay as they were."""

import hashlib
import json

import pytest
import torch

from conftest import ROOT, run_cli

REPEATED = "bold birds sing in dark rooms, each one calm. " * 20  # unlike the demo text


def _ids(loaded, text):
    return loaded.vocab.encode(text)


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from charrnn.cli.common import load_model
    return load_model(str(tiny_run), "cpu")


def test_a_window_is_scored_before_the_model_learns_from_it(loaded):
    """One window holding the whole text: nothing has been learnt when it is scored, so the
    adapted loss is the static one; with many windows, later ones are scored after learning."""
    from charrnn.analysis.adapt import AdaptSettings, adaptive_loss
    from charrnn.analysis.evaluate import stream_loss

    ids = _ids(loaded, REPEATED[:400])
    cpu = torch.device("cpu")
    static, count = stream_loss(loaded.model, ids, cpu, streams=1, seq_len=len(ids))
    once = adaptive_loss(loaded.model, ids, cpu, AdaptSettings(lr=1.0, window=len(ids)))
    assert once[1] == count and once[0] == pytest.approx(static, abs=1e-5)
    learning = adaptive_loss(loaded.model, ids, cpu, AdaptSettings(lr=0.1, window=20))
    assert learning[1] == count and learning[0] < static - 0.05


def test_adapting_leaves_the_model_as_it_was(loaded):
    from charrnn.analysis.adapt import AdaptSettings, adaptive_loss

    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    adaptive_loss(loaded.model, _ids(loaded, REPEATED[:300]), torch.device("cpu"),
                  AdaptSettings(lr=0.5, decay=0.1, window=10, streams=2))
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_decay_pulls_the_weights_back_to_the_trained_ones(loaded):
    """decay 0.999... : each step is almost undone, so the loss stays near the static one."""
    from charrnn.analysis.adapt import AdaptSettings, adaptive_loss

    ids, cpu = _ids(loaded, REPEATED[:400]), torch.device("cpu")
    free = adaptive_loss(loaded.model, ids, cpu, AdaptSettings(lr=0.1, window=20))[0]
    held = adaptive_loss(loaded.model, ids, cpu, AdaptSettings(lr=0.1, window=20,
                                                                decay=0.999))[0]
    static = adaptive_loss(loaded.model, ids, cpu, AdaptSettings(lr=1e-12, window=20))[0]
    assert free < held and abs(held - static) < abs(free - static) / 5


def test_eval_adapt_reports_both_and_never_changes_the_checkpoint(run_copy, tmp_path):
    text = tmp_path / "fox.txt"
    text.write_text(REPEATED)
    files = sorted(run_copy.iterdir())
    digest = lambda: {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}  # noqa
    before = digest()
    proc = run_cli("eval", "-c", str(run_copy), str(text), "--adapt", "--adapt-window", "20",
                   "--adapt-lr", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    adapted = result["adapted"]
    assert adapted["loss"] < result["loss"] - 0.05  # a repeated text: learning it pays
    assert adapted["chars"] == result["chars"] == len(REPEATED) - 1
    assert (adapted["lr"], adapted["window"], adapted["decay"], adapted["streams"]) == \
        (0.1, 20, 0.0, 1)
    assert adapted["seconds"] >= 0 and result["seconds"] >= 0
    plain = run_cli("eval", "-c", str(run_copy), str(text), "--adapt", "--adapt-window", "20")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["static", "adapted", "gain"]
    assert digest() == before


def test_eval_without_adapt_prints_what_it_did(tiny_run, tmp_path):
    text = tmp_path / "fox.txt"
    text.write_text(REPEATED)
    proc = run_cli("eval", "-c", str(tiny_run), str(text), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "adapted" not in json.loads(proc.stdout)


@pytest.mark.parametrize("command", ["eval", "compress"])
@pytest.mark.parametrize("args, named", [
    (["--adapt", "--adapt-lr", "0"], "--adapt-lr"),
    (["--adapt", "--adapt-lr", "nan"], "--adapt-lr"),
    (["--adapt", "--adapt-decay", "1"], "--adapt-decay"),
    (["--adapt", "--adapt-decay", "-0.1"], "--adapt-decay"),
    (["--adapt", "--adapt-window", "0"], "--adapt-window"),
    (["--adapt", "--adapt-streams", "0"], "--adapt-streams"),
    (["--adapt-lr", "0.1"], "--adapt"),
])
def test_bad_adapt_options_are_one_error_line(cli, tiny_run, tmp_path, command, args, named):
    out = ["-o", str(tmp_path / "out.crz")] if command == "compress" else []
    code, stdout, stderr = cli(command, "-c", tiny_run, str(ROOT / "data" / "foodchain.txt"),
                               *out, *args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], stderr
    assert stdout == "" and not (tmp_path / "out.crz").exists()
