"""`charrnn eval` without a text: the validation split is rebuilt from the training text only
when that text is still the one the model was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import FOODCHAIN, TINY, run_cli


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """best.pt of a two-step tiny run (enough for eval: the test is about its text)."""
    out = tmp_path_factory.mktemp("split") / "run"
    proc = run_cli("train", str(TINY), "--out", str(out), "--max-steps", "2", "--threads", "1",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out / "best.pt"


def _checkpoint_on(short_run: Path, tmp_path: Path, text: str, **data) -> tuple[Path, Path]:
    """A copy of the checkpoint whose training text is `text`, at a path of its own."""
    corpus = tmp_path / "foodchain.txt"
    corpus.write_text(text, encoding="utf-8")
    state = torch.load(short_run, weights_only=True)
    state["config"]["data"].update({"path": str(corpus), **data})
    ckpt = tmp_path / "best.pt"
    torch.save(state, ckpt)
    return ckpt, corpus


def test_eval_refuses_a_training_text_that_changed_since(short_run, tmp_path, cli):
    text = FOODCHAIN.read_text(encoding="utf-8")
    ckpt, corpus = _checkpoint_on(short_run, tmp_path, text)
    code, before, err = cli("eval", "-c", ckpt, "--json", stdin=None)
    assert code == 0, err
    corpus.write_text(text.replace("sharks", "shark"), encoding="utf-8")  # sed -i s/sharks/shark/g
    code, out, err = cli("eval", "-c", ckpt, "--json", stdin=None)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {corpus} is not the text this model was trained on"), err
    assert f"{len(text):,} characters" in err and f"{len(text) - 48:,} characters" in err
    assert f"charrnn eval -c {ckpt} {corpus}" in err  # how to score it anyway
    code, out, err = cli("eval", "-c", ckpt, corpus, "--json", stdin=None)
    assert code == 0 and json.loads(out)["chars"] == len(text) - 48 - 1, err
    corpus.write_text(text, encoding="utf-8")  # restored: the split is scored as before
    code, after, err = cli("eval", "-c", ckpt, "--json", stdin=None)
    assert code == 0 and json.loads(after) == json.loads(before), err


def test_eval_of_a_checkpoint_without_a_text_fingerprint_warns_and_scores(short_run, tmp_path,
                                                                         cli):
    ckpt, corpus = _checkpoint_on(short_run, tmp_path, FOODCHAIN.read_text(encoding="utf-8"))
    state = torch.load(ckpt, weights_only=True)
    del state["data"]  # written before checkpoints recorded their text
    torch.save(state, ckpt)
    code, out, err = cli("eval", "-c", ckpt, "--json", stdin=None)
    assert code == 0, err
    assert json.loads(out)["chars"] > 0
    assert "warning:" in err and "no fingerprint" in err and str(corpus) in err


def test_eval_of_a_run_without_a_validation_split_says_there_is_none(short_run, tmp_path, cli):
    ckpt, _ = _checkpoint_on(short_run, tmp_path, FOODCHAIN.read_text(encoding="utf-8"),
                             val_fraction=0.0)
    code, out, err = cli("eval", "-c", ckpt, stdin=None)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "cannot rebuild" not in err
    assert "has no validation split" in err and "data.val_fraction: 0" in err
    assert "TEXT_FILE" in err


def test_the_split_of_a_fine_tuned_model_is_rebuilt_in_its_wider_vocab(tmp_path):
    from charrnn.config import Config
    from charrnn.text.data import load_training_corpus
    from charrnn.analysis.evaluate import training_validation_split
    from charrnn.text.data import widen
    from charrnn.text.fingerprint import text_fingerprint

    cfg = Config()
    cfg.data.path = str(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("sharks eat tuna\n" * 20)
    chars = sorted(set("sharks eat tuna\n") | set("XYZ"))  # its base model knew X, Y and Z
    trained = widen(load_training_corpus(cfg), chars, cfg.data.val_fraction)
    corpus, warning = training_validation_split(cfg, chars, text_fingerprint(trained.ids),
                                                score_command="charrnn eval -c m.pt")
    assert warning is None and torch.equal(corpus.val, trained.val)
