"""Config: YAML loading, overrides, and one clear error for each kind of mistake."""

from pathlib import Path

import pytest

from charrnn.config import (Config, apply_overrides, config_from_dict, default_config,
                            load_config, parse_override, save_config)
from charrnn.errors import ConfigError
from conftest import ROOT, SHAKESPEARE, assert_written_atomically


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.type in ("rnn", "lstm", "gru")


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {hidden_size: 32}\ntrain: {lr: 1.0e-3}\n")
    cfg = load_config(path, ["train.lr=5e-4", "model.type=gru"])
    assert cfg.model.hidden_size == 32          # from YAML
    assert cfg.train.lr == 5e-4                 # override wins; 5e-4 read as a number
    assert cfg.model.type == "gru"
    assert cfg.train.batch_size == Config().train.batch_size  # default
    assert cfg.train.out_dir == "runs/c"        # named after the config


def test_int_is_accepted_for_float_but_not_the_reverse():
    cfg = config_from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError, match=r"model.hidden_size: expected int, got 1.5"):
        config_from_dict({"model": {"hidden_size": 1.5}})


@pytest.mark.parametrize("raw, message", [
    ({"modle": {}}, "unknown section 'modle' (did you mean 'model'?)"),
    ({"model": {"hiden_size": 3}}, "unknown key 'model.hiden_size' (did you mean 'hidden_size'?)"),
    ({"model": {"hidden_size": 0}}, "model.hidden_size: must be >= 1, got 0"),
    ({"model": {"dropout": 1.5}}, "model.dropout: must be < 1, got 1.5"),
    ({"train": {"lr": -1.0}}, "train.lr: must be > 0, got -1.0"),
    ({"train": {"seq_len": 0}}, "train.seq_len: must be >= 1, got 0"),
    ({"data": {"val_fraction": 1}}, "data.val_fraction: must be < 1, got 1.0"),
    ({"train": {"batch_size": "big"}}, "train.batch_size: expected int, got 'big'"),
    ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule: must be one of constant, cosine"),
    ({"train": {"precision": "fp8"}}, "train.precision: must be one of auto, fp32, fp16, bf16"),
])
def test_bad_values_name_key_value_and_rule(raw, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"hidden_size": 0, "dropout": 2.0}})
    assert "hidden_size" in str(err.value) and "dropout" in str(err.value)


def test_override_parsing():
    assert parse_override("model.type=gru") == (["model", "type"], "gru")
    assert parse_override("train.grad_clip=null") == (["train", "grad_clip"], None)
    assert parse_override("sample.top_k=true") == (["sample", "top_k"], True)
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="SECTION.KEY"):
        parse_override("lr=1")
    assert apply_overrides({"train": {"lr": 1.0}}, ["train.lr=2"]) == {"train": {"lr": 2}}


def test_errors_from_set_name_set_not_the_config_file(cli):
    tiny = ROOT / "configs" / "tiny.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(tiny, ["model.hiden_size=64"])
    assert str(err.value) == ("--set: unknown key 'model.hiden_size' (did you mean "
                              "'hidden_size'?)")
    for overrides, message in ((["modle.hidden_size=3"], "--set: unknown section 'modle'"),
                               (["model.hidden_size=0"], "--set: model.hidden_size: must be >= 1")):
        with pytest.raises(ConfigError, match=message) as err:
            load_config(tiny, overrides)
        assert "tiny.yaml" not in str(err.value)
    with pytest.raises(ConfigError, match="^--set: model.dropout: must be < 1"):
        default_config(["model.dropout=2"])
    with pytest.raises(ConfigError, match=r"^--set: train.lr: must be > 0") as err:  # --resume
        config_from_dict({"model": {"hidden_size": 8}}, source="runs/a/last.pt (config)",
                         overrides=["train.lr=0"])
    # a mistake in the file and one in --set: each named by its source, both at once
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"hidden_size": 0}}, source="my.yaml",
                         overrides=["train.seq_len=0"])
    assert str(err.value) == ("my.yaml: model.hidden_size: must be >= 1, got 0; "
                              "--set: train.seq_len: must be >= 1, got 0")
    # a --set that corrects the file's value leaves nothing to report
    assert config_from_dict({"model": {"hidden_size": 0}}, source="my.yaml",
                            overrides=["model.hidden_size=8"]).model.hidden_size == 8
    with pytest.raises(ConfigError, match=r"^\S+shakespeare.yaml and --set: data.corpus"):
        load_config(ROOT / "configs" / "shakespeare.yaml", ["data.corpus=tinyshakespeare"])
    code, _, err = cli("train", tiny, "--set", "model.hiden_size=64")
    assert code == 2 and err == ("error: --set: unknown key 'model.hiden_size' (did you mean "
                                 "'hidden_size'?)\n")


@pytest.mark.parametrize("text, message", [
    ("model: [1, 2", "not valid YAML at line"),
    ("- just\n- a list\n", "expected a mapping of sections"),
])
def test_unreadable_config_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)


def test_relative_data_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "text.txt").write_text("hello")
    (tmp_path / "cfgs" / "c.yaml").write_text("data: {path: text.txt}\n")
    monkeypatch.chdir(ROOT)
    cfg = load_config(tmp_path / "cfgs" / "c.yaml")
    assert Path(cfg.data.path) == tmp_path / "cfgs" / "text.txt"


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.type=rnn"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()


def test_saved_config_is_written_atomically(tmp_path, renames):
    save_config(Config(), tmp_path / "config.yaml")
    assert_written_atomically(renames, tmp_path / "config.yaml")


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, renames):
    from charrnn.training.rundir import MetricsLog
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5}\n{"step": 10}\n')
    MetricsLog(path, resume_step=5).close()
    assert path.read_text() == '{"step": 5}\n'
    assert_written_atomically(renames, path)


@pytest.mark.parametrize("name", ["shakespeare.yaml", "shakespeare-cpu.yaml"])
def test_shakespeare_configs_work_offline_from_any_folder(name, tmp_path, monkeypatch):
    from charrnn.text.data import load_training_corpus
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "no-corpora"))
    cfg = load_config(ROOT / "configs" / name)
    assert Path(cfg.data.path).resolve() == SHAKESPEARE
    corpus = load_training_corpus(cfg)
    assert len(corpus.ids) == 1_115_394 and len(corpus.vocab) == 65
