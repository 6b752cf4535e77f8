"""The training step on the device: the loss, the finite flag and the gradient norm are read to
the host once per `log_every` steps, a non-finite step is skipped on the device, and a run that
must stop stops at the next read without saving non-finite weights."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from charrnn.checkpoint import load_checkpoint
from charrnn.errors import TrainingFailed
from charrnn.training.resume import inexact_resume
from charrnn.training.loop import train

from test_train import nonfinite_at, small_config

# the Tensor methods that copy a value to the host (on a GPU each one waits for the GPU)
HOST_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")
# where the step runs: the CPU here, and the GPU's fused optimizer and bf16 path where there is one
DEVICES = [pytest.param("cpu", "fp32", id="cpu"),
           pytest.param("cuda", "fp32", id="cuda-fp32", marks=pytest.mark.cuda),
           pytest.param("cuda", "bf16", id="cuda-bf16", marks=pytest.mark.cuda)]


def count_host_reads(monkeypatch) -> list[int]:
    """Count every read of a tensor's value by the host from now on: returns the counter."""
    counter = [0]
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            counter[0] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counter


@pytest.mark.parametrize("device, precision", DEVICES)
def test_the_steps_between_two_logs_read_nothing_to_the_host(device, precision, tmp_path,
                                                             monkeypatch):
    cfg = small_config(tmp_path, max_steps=20, log_every=5, eval_every=1000, device=device,
                       precision=precision)
    reads = count_host_reads(monkeypatch)
    at_log = []  # the reads so far, at each logged step
    train(cfg, run_dir=str(tmp_path / "r"),
          on_event=lambda kind, info: at_log.append(reads[0]) if kind == "step" else None)
    per_window = [b - a for a, b in zip(at_log, at_log[1:])]
    assert len(per_window) == 3 and max(per_window) <= 1, per_window  # 5 steps, one read


def test_a_late_read_trains_as_a_read_at_every_step(tmp_path, monkeypatch):
    # step 4's gradient is not finite: skipped on the device, whenever the host hears of it
    ends = []
    for log_every in (1, 10):
        cfg = small_config(tmp_path, max_steps=10, log_every=log_every, eval_every=1000,
                           skip_nonfinite=1)
        nonfinite_at(monkeypatch, {4})
        notes = []
        train(cfg, run_dir=str(tmp_path / f"every-{log_every}"),
              on_event=lambda kind, info: notes.append(info["message"]) if kind == "note"
              else None)
        assert any(n.startswith("step 4: non-finite loss, step skipped") for n in notes), notes
        ends.append(load_checkpoint(tmp_path / f"every-{log_every}" / "last.pt"))
    for state in ends:
        assert state["skipped_steps"] == 1
        # the optimizer took 9 steps: the skipped one was undone on the device
        assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {9.0}
        assert all(torch.isfinite(t).all() for t in state["model"].values())
        for s in state["optimizer"]["state"].values():
            assert torch.isfinite(s["exp_avg"]).all() and torch.isfinite(s["exp_avg_sq"]).all()
    for key in ends[0]["model"]:
        assert torch.equal(ends[0]["model"][key], ends[1]["model"][key]), key


@pytest.mark.parametrize("device, precision", DEVICES)
def test_a_run_that_must_stop_stops_at_the_next_read_and_keeps_its_checkpoint(
        device, precision, tmp_path, monkeypatch):
    cfg = small_config(tmp_path, max_steps=30, log_every=20, save_every=5, eval_every=1000,
                       device=device, precision=precision)
    nonfinite_at(monkeypatch, {7})
    with pytest.raises(TrainingFailed, match="step 7: the loss or gradient is not finite"):
        train(cfg, run_dir=str(tmp_path / "r"))
    state = load_checkpoint(tmp_path / "r" / "last.pt", map_location="cpu")
    assert state["step"] == 5  # the save of step 10 read the bad step first: nothing written
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.parametrize("device, precision", DEVICES)
def test_without_clipping_a_nonfinite_gradient_is_still_skipped(device, precision, tmp_path,
                                                                monkeypatch):
    def no_clip(*args, **kwargs):
        raise AssertionError("grad_clip is null: nothing is clipped")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clip)
    import charrnn.training.loop as train_module
    real_build, backwards = train_module.build_model, []

    def build(model_cfg, vocab_size):
        model = real_build(model_cfg, vocab_size)

        def overflow(module, grad_input, grad_output):
            backwards.append(1)
            if len(backwards) == 3:  # the loss stays finite; its gradient does not
                return (torch.full_like(grad_input[0], math.inf),)
            return None

        model.head.register_full_backward_hook(overflow)
        return model

    monkeypatch.setattr(train_module, "build_model", build)
    cfg = small_config(tmp_path, max_steps=8, log_every=4, eval_every=1000, grad_clip=None,
                       skip_nonfinite=1, device=device, precision=precision)
    train(cfg, run_dir=str(tmp_path / "r"))
    state = load_checkpoint(tmp_path / "r" / "last.pt", map_location="cpu")
    assert state["step"] == 8 and state["skipped_steps"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())



@pytest.mark.parametrize("device, dropout, layers, warned", [
    ("cuda", 0.1, 2, True), ("cpu", 0.1, 2, False), ("cuda", 0.0, 2, False),
    ("cuda", 0.1, 1, False)])
def test_a_resume_on_cuda_with_dropout_between_layers_warns_that_it_is_not_exact(
        device, dropout, layers, warned):
    cfg = small_config(Path("."), max_steps=10)
    cfg = replace(cfg, model=replace(cfg.model, dropout=dropout, num_layers=layers))
    limits = inexact_resume(torch.device(device), cfg)
    assert any("cuDNN" in m and "continue exactly" in m for m in limits) == warned
    assert not any("time budget" in m for m in limits)


def test_a_resumed_run_with_a_time_budget_warns_that_it_follows_the_clock(tmp_path):
    cfg = small_config(tmp_path, max_steps=4, eval_every=1000)
    train(cfg, run_dir=str(tmp_path / "r"))
    notes = []
    for minutes in (None, 10.0):  # without a budget the CPU resume is exact: no warning
        longer = replace(cfg, train=replace(cfg.train, max_steps=cfg.train.max_steps + 2,
                                            max_minutes=minutes))
        train(longer, resume=str(tmp_path / "r"),
              on_event=lambda kind, info: notes.append(info) if kind == "note" else None)
        cfg = longer
    limits = [n["message"] for n in notes if n.get("warning")]
    assert len(limits) == 1 and "time budget (train.max_minutes)" in limits[0], notes
    assert "does not continue exactly" in limits[0]
