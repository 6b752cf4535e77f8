"""Paths that survive `cd`: data paths in configs and runs, the corpora folder, and --data."""

from __future__ import annotations

import shutil

import pytest
import yaml

from charrnn.config import load_config
from charrnn.errors import ConfigError
from conftest import FOODCHAIN, TINY

SMALL = ["--max-steps", "2", "--set", "model.hidden_size=8", "--set", "model.num_layers=1",
         "--set", "train.batch_size=2", "--set", "train.seq_len=8", "--set", "train.threads=1",
         "--set", "train.eval_every=2", "-q"]


def test_data_path_is_relative_to_the_config_file_then_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "c.yaml").write_text("data: {path: text.txt}\n")
    (tmp_path / "cfgs" / "text.txt").write_text("beside the config")
    (tmp_path / "text.txt").write_text("in the current folder")
    monkeypatch.chdir(tmp_path)
    assert load_config("cfgs/c.yaml").data.path == str(tmp_path / "cfgs" / "text.txt")
    (tmp_path / "cfgs" / "text.txt").unlink()  # then the current folder
    assert load_config("cfgs/c.yaml").data.path == str(tmp_path / "text.txt")


def test_data_paths_are_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert load_config(TINY).data.path == str(FOODCHAIN)  # ../data/foodchain.txt, normalized
    cfg = load_config(TINY, ["data.path=t.txt"])  # a flag is relative to the current folder
    assert cfg.data.path == str(tmp_path / "t.txt")
    assert load_config(TINY, ["data.path=books/*.txt"]).data.path == str(tmp_path / "books/*.txt")
    assert load_config(TINY, ['data.path="-"']).data.path == "-"


def test_corpus_and_path_together_is_an_error_naming_both(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {corpus: tinyshakespeare, path: mine.txt}\n")
    with pytest.raises(ConfigError, match=r"data\.corpus.*data\.path|data\.path.*data\.corpus"):
        load_config(path)


def test_a_config_given_by_absolute_path_trains_from_any_folder(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", str(TINY), "--out", "run", *SMALL)
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["path"] == str(FOODCHAIN)


def test_eval_and_resume_work_after_a_cd(tmp_path, cli, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(FOODCHAIN, work / "text.txt")
    monkeypatch.chdir(work)
    code, _, err = cli("train", str(TINY), "--data", "text.txt", "--out", "run", *SMALL)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # elsewhere
    code, out, err = cli("eval", "-c", "work/run", "--json")
    assert code == 0 and '"loss"' in out, err
    code, _, err = cli("train", "--resume", "work/run", "--max-steps", "4", "-q")
    assert code == 0, err
    (work / "text.txt").rename(work / "moved.txt")
    code, _, err = cli("train", "--resume", "work/run", "--max-steps", "6", "-q")
    assert code == 2 and "text.txt" in err and "--data" in err, err
    code, _, err = cli("train", "--resume", "work/run", "--max-steps", "6", "-q",
                       "--data", "work/moved.txt")
    assert code == 0, err


def test_train_with_data_alone_is_planned_for_the_text(tmp_path, cli, monkeypatch):
    (tmp_path / "my.txt").write_text(FOODCHAIN.read_text() * 20)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--data", "my.txt", "--max-steps", "1", "--threads", "1", "-q")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "runs" / "my" / "config.yaml").read_text())
    # 72,000 training characters feed at most 576,000 parameters: 1 x 256, not 2 x 256
    assert (saved["model"]["num_layers"], saved["model"]["hidden_size"]) == (1, 256)
    assert saved["train"]["batch_size"] == 16 and saved["train"]["max_steps"] == 1
    assert saved["train"]["plan"] is False  # resolved: a rerun of this config plans nothing
    assert saved["data"]["path"] == str(tmp_path / "my.txt")


@pytest.mark.parametrize("files", [2, 3])
def test_a_pattern_the_shell_expanded_is_explained(tmp_path, cli, monkeypatch, files):
    monkeypatch.chdir(tmp_path)
    names = [f"books/{c}.txt" for c in "abc"[:files]]
    for args in (["train", "--data", *names], ["train", str(TINY), "--data", *names]):
        code, _, err = cli(*args)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "'books/*.txt'" in err or "quote" in err
        assert "folder" in err and "books/b.txt" in err


def test_corpora_go_to_the_user_data_folder(tmp_path, monkeypatch):
    from charrnn.text.corpora import corpora_dir
    monkeypatch.delenv("CHARRNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert corpora_dir() == tmp_path / "xdg" / "charrnn" / "corpora"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert corpora_dir() == tmp_path / "home" / ".local" / "share" / "charrnn" / "corpora"
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "env"))
    assert corpora_dir() == tmp_path / "env"
    assert corpora_dir(tmp_path / "to") == tmp_path / "to"
