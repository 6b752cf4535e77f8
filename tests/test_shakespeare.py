"""Quality on a real corpus: Tiny Shakespeare, committed under data/ (slow)."""

import json

import pytest

from conftest import ROOT, run_cli


@pytest.mark.slow
def test_two_layer_lstm_learns_words_in_200_steps(shakespeare, tmp_path):
    out = tmp_path / "lstm"
    proc = run_cli("train", str(ROOT / "configs" / "tiny.yaml"), "--data", str(shakespeare),
                   "--out", str(out), "--max-steps", "200", "--device", "cpu",
                   "--set", "model.num_layers=2", "--set", "model.hidden_size=128",
                   "--set", "model.embedding_dim=64", "--set", "train.batch_size=32",
                   "--set", "train.seq_len=100", "--set", "train.lr=3e-3",
                   "--set", "train.eval_every=200", "--set", "train.warmup_steps=0", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(run_cli("eval", "-c", str(out), "--json").stdout)
    assert result["loss"] < 2.3, result
    text = run_cli("sample", "-c", str(out), "--prime", "The ", "--length", "400",
                   "--seed", "0").stdout
    words = [w for w in text.split() if w.isalpha() and len(w) > 1]
    assert "\n" in text and len(words) > 20
    assert {"the", "and", "to", "of", "I", "you", "my", "a", "that", "is"} & set(words)


@pytest.mark.slow
def test_shakespeare_cpu_config_at_a_fixed_step_count(shakespeare, tmp_path):
    """The 10-minute config, cut to 600 steps (about 2 minutes here): val loss <= 1.80 nats."""
    out = tmp_path / "cpu"
    proc = run_cli("train", str(ROOT / "configs" / "shakespeare-cpu.yaml"), "--data",
                   str(shakespeare), "--out", str(out), "--max-steps", "600",
                   "--set", "train.max_minutes=null", "--set", "train.eval_every=600", "-q",
                   timeout=1200)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(run_cli("eval", "-c", str(out), "--json").stdout)
    assert result["loss"] <= 1.80, result
