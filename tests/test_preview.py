"""Samples while training: to samples.jsonl and stderr, without disturbing exact resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from charrnn.errors import ConfigError
from charrnn.report import Reporter
from charrnn.training.loop import train

from test_train import assert_same_weights, small_config, train_losses


def with_sample(cfg, **sample):
    return replace(cfg, sample=replace(cfg.sample, **sample))


def test_previews_leave_training_exactly_as_it_was(tmp_path):
    """Dropout is on, so a preview that left the model in eval mode, drew from the training
    random numbers or touched the carried state would change the losses."""
    plain = small_config(tmp_path, max_steps=40, lr_schedule="constant", sample_every=0)
    train(plain, run_dir=str(tmp_path / "a"))
    assert not (tmp_path / "a" / "samples.jsonl").exists()
    previews = with_sample(replace(plain, train=replace(plain.train, sample_every=7)),
                           preview_length=30)
    events = []
    on_event = lambda kind, info: events.append(info) if kind == "sample" else None  # noqa: E731
    train(replace(previews, train=replace(previews.train, max_steps=20)),
          run_dir=str(tmp_path / "b"), on_event=on_event)
    train(previews, resume=str(tmp_path / "b"), on_event=on_event)
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")  # bit for bit
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    records = [json.loads(line)
               for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [7, 14, 21, 28, 35] and records == events
    assert all(len(r["text"]) == 30 for r in records)


def test_preview_defaults_and_prime(tmp_path):
    cfg = with_sample(small_config(tmp_path, max_steps=20), preview_prime="sharks",
                      preview_length=10)
    assert cfg.train.sample_every is None and cfg.train.eval_every == 20
    assert small_config(tmp_path).sample.preview_length == 200
    train(cfg, run_dir=str(tmp_path / "run"))
    (record,) = [json.loads(line)
                 for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert record["step"] == 20 and record["text"].startswith("sharks")
    assert len(record["text"]) == 16
    bad = with_sample(cfg, preview_prime="sharks!?")
    with pytest.raises(ConfigError, match="sample.preview_prime"):
        train(bad, run_dir=str(tmp_path / "bad"))


def test_a_preview_goes_to_stderr(capsys):
    Reporter().training_event("sample", {"step": 300, "text": "sharks feed on tuna."})
    assert capsys.readouterr().err == "sample at step 300:\nsharks feed on tuna.\n"
