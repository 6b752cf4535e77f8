"""Model sizes: every size key is bounded, and a model that cannot fit in memory is refused
before it is built."""

from __future__ import annotations

import pytest
import torch

from charrnn import device as device_mod
from charrnn.config import ModelConfig, config_from_dict
from charrnn.errors import ConfigError, ModelError
from charrnn.models import build_model, check_training_fits, count_parameters, estimate_parameters
from conftest import TINY

SIZE_KEYS = [("model", "embedding_dim"), ("model", "hidden_size"), ("model", "num_layers"),
             ("train", "batch_size"), ("train", "seq_len")]


@pytest.mark.parametrize("section, key", SIZE_KEYS, ids=[k for _, k in SIZE_KEYS])
def test_every_size_key_has_an_upper_bound(section, key):
    with pytest.raises(ConfigError, match=rf"{section}.{key}: must be <= [\d,]+, got "
                                          rf"99999999999999999"):
        config_from_dict({section: {key: 99999999999999999}})


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("shape", [(16, 32, 1), (8, 24, 3)])
def test_the_parameter_estimate_is_the_count_of_the_built_model(family, shape):
    embedding, hidden, layers = shape
    cfg = ModelConfig(type=family, embedding_dim=embedding, hidden_size=hidden, num_layers=layers)
    assert estimate_parameters(cfg, 37) == count_parameters(build_model(cfg, 37))


def test_a_model_that_cannot_fit_in_memory_is_refused(monkeypatch):
    cfg = config_from_dict({"model": {"hidden_size": 1024, "num_layers": 2},
                            "train": {"batch_size": 64, "seq_len": 100}})
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_mod, "machine_memory", lambda: 4 << 30)
    check_training_fits(cfg, 65, cfg.train.batch_size, cpu)  # about 1 GB, as measured
    monkeypatch.setattr(device_mod, "machine_memory", lambda: 1 << 29)
    with pytest.raises(ModelError, match=r"needs about [\d.]+ GiB of memory, more than this "
                                         r"machine's 0.5 GiB: lower model.hidden_size"):
        check_training_fits(cfg, 65, cfg.train.batch_size, cpu)
    check_training_fits(cfg, 65, 8, cpu)  # a batch of 8 rows per process fits
    # on another device, the weights are first built in the machine's memory
    monkeypatch.setattr(device_mod, "memory_of", lambda device: (
        (64 << 30, "the GPU's") if device.type == "cuda" else (1 << 20, "this machine's")))
    with pytest.raises(ModelError, match=r"building this model .* more than this machine's"):
        check_training_fits(cfg, 65, 8, torch.device("cuda"))


def test_train_refuses_a_huge_model_before_building_it(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", TINY, "--out", out, "--set", "model.hidden_size=99999999999999999")
    assert code == 2 and err.count("\n") == 1 and "model.hidden_size: must be <=" in err, err
    code, _, err = cli("train", TINY, "--out", out, "--set", "model.hidden_size=65536",
                       "--set", "model.num_layers=64")
    assert code == 2 and err.count("\n") == 1, err
    assert "needs about" in err and "more than this machine's" in err and "internal" not in err
    assert not out.exists()


@pytest.mark.cuda
def test_a_model_larger_than_the_gpu_is_refused_naming_the_gpu(tmp_path, cli):
    total = torch.cuda.get_device_properties(0).total_memory
    layers = 2 + total // (16 * 4 * 2 * 16384 ** 2)  # parameters and Adam state beyond the GPU
    code, _, err = cli("train", TINY, "--out", tmp_path / "run", "--device", "cuda",
                       "--set", "model.hidden_size=16384", "--set", f"model.num_layers={layers}")
    assert code == 2 and err.count("\n") == 1, err
    assert "more than the GPU's" in err, err
