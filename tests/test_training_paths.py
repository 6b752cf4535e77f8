"""Training paths that only these tests take: plain Adam, train.eval_batches, a time budget
across resumes, and the loss scaler of fp16 (on a GPU, and its code path on the CPU)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

import charrnn.training.loop as train_module
from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.models import build_model
from charrnn.training.loop import train

from conftest import SHAKESPEARE
from test_train import small_config, train_losses


def test_adam_is_plain_adam_and_it_learns_and_resumes(tmp_path):
    cfg = small_config(tmp_path, max_steps=30, optimizer="adam", weight_decay=0.1,
                       lr_schedule="constant", eval_every=100)
    train(replace(cfg, train=replace(cfg.train, max_steps=20)), run_dir=str(tmp_path / "a"))
    group = load_checkpoint(tmp_path / "a" / "last.pt")["optimizer"]["param_groups"][0]
    # weight decay added to the gradient (Adam), not decoupled from it (AdamW, the default)
    assert group["decoupled_weight_decay"] is False and group["weight_decay"] == 0.1
    train(cfg, resume=str(tmp_path / "a"))
    losses = [loss for _, loss in train_losses(tmp_path / "a")]
    # a model that learns nothing stays at ln 23 = 3.135 on every batch; this one leaves it
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses


def test_eval_batches_scores_only_the_first_windows_of_the_validation_split(tmp_path):
    text = SHAKESPEARE.read_text()[:32_770]
    (tmp_path / "shk.txt").write_text(text)
    cfg = small_config(tmp_path, max_steps=20, eval_batches=1)
    cfg = replace(cfg, data=replace(cfg.data, path=str(tmp_path / "shk.txt"), val_fraction=0.5))
    train(cfg, run_dir=str(tmp_path / "run"))
    records = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    logged = [r["val_loss"] for r in records if "val_loss" in r]
    # by hand (README: 16 streams, windows of 256): the last half, 16,385 characters, is 16
    # streams of 1,024 predicted characters, read in 4 windows with the hidden state carried
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    model = build_model(cfg.model, len(state["vocab"]))
    model.load_state_dict(state["model"])
    model.eval()
    val = torch.tensor([state["vocab"].index(c) for c in text[-16_385:]])
    x, y = val[:-1].view(16, 1024), val[1:].view(16, 1024)
    windows, hidden = [], None
    with torch.no_grad():
        for start in range(0, 1024, 256):
            logits, hidden = model(x[:, start:start + 256], hidden)
            windows.append(float(F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 y[:, start:start + 256].reshape(-1))))
    assert logged == [pytest.approx(windows[0], rel=1e-5)]  # one evaluation, at step 20
    whole = sum(windows) / len(windows)
    assert abs(whole - windows[0]) > 0.01 * whole, windows  # the whole split would tell


def test_a_time_budget_counts_every_session_and_a_larger_one_continues(tmp_path, cli):
    run = tmp_path / "t"
    cfg = small_config(tmp_path, max_steps=10**6, max_minutes=0.02)  # 1.2 s
    first = train(cfg, run_dir=str(run))
    spent = load_checkpoint(run / "last.pt")["elapsed_seconds"]
    assert first.stopped_by == "max_minutes" and first.step > 0 and spent >= 1.2
    code, _, err = cli("train", "--resume", run, "-q")  # the same budget: nothing to do
    assert code == 0 and load_checkpoint(run / "last.pt")["step"] == first.step, err
    code, _, err = cli("train", "--resume", run, "--max-minutes", "0.04", "-q")
    assert code == 0, err
    state = load_checkpoint(run / "last.pt")
    assert state["step"] > first.step and state["stopped_by"] == "max_minutes"
    assert state["elapsed_seconds"] >= 2.4
    assert [s for s, _ in train_losses(run)] == list(range(1, state["step"] + 1))  # one run
    # a run that has trained 10 minutes, given 10 minutes and 1.2 s, trains about 1.2 s more
    # (not 10 minutes: the budget counts every session); the step cap is 10 times that
    state["elapsed_seconds"] = 600.0
    del state["path"]
    save_checkpoint(state, run / "last.pt")
    cap = state["step"] + 10 * first.step
    code, _, err = cli("train", "--resume", run, "--max-minutes", "10.02", "--max-steps", cap, "-q")
    assert code == 0, err
    last = load_checkpoint(run / "last.pt")
    assert last["stopped_by"] == "max_minutes" and state["step"] < last["step"] < cap
    assert last["elapsed_seconds"] >= 601.2


# ------------------------------------------------------------------------- the loss scaler

def scaled_run(tmp_path, name: str, device: str, precision: str, *, scaler: bool = True,
               overflow_at: int | None = None) -> tuple[int, list[float], dict]:
    """Train 12 steps (grad_clip 1) under a loss scaler: the optimizer steps taken, the gradient
    norms clipping saw, and last.pt. `overflow_at`: the backward pass (1-based) whose gradients
    overflow. On the CPU (which has no fp16 autocast) the scaler is forced on, so that its code
    path runs here too; `scaler=False` there trains without one."""
    real_build, real_clip = train_module.build_model, torch.nn.utils.clip_grad_norm_
    backwards, norms, steps = [], [], []

    def build(model_cfg, vocab_size):
        model = real_build(model_cfg, vocab_size)

        def overflow(module, grad_input, grad_output):
            backwards.append(1)
            if len(backwards) == overflow_at:  # the loss stays finite; its gradient does not
                return (torch.full_like(grad_input[0], math.inf),)
            return None

        model.head.register_full_backward_hook(overflow)
        return model

    def clip(params, max_norm):
        norm = real_clip(params, max_norm)
        norms.append(float(norm))
        return norm

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_model", build)
        patch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
        if device == "cpu" and scaler:
            patch.setattr(train_module, "grad_scaler",
                          lambda device, precision: torch.amp.GradScaler("cpu", init_scale=2.0**16))
        hook = register_optimizer_step_post_hook(lambda *args: steps.append(1))
        cfg = small_config(tmp_path, max_steps=12, device=device, precision=precision,
                           grad_clip=1.0, eval_every=100)
        cfg = replace(cfg, model=replace(cfg.model, dropout=0.0))  # masks drawn alike in both
        try:
            train(cfg, run_dir=str(tmp_path / name))
        finally:
            hook.remove()
    return len(steps), norms, load_checkpoint(tmp_path / name / "last.pt", map_location="cpu")


SCALED = [pytest.param("cpu", "fp32", id="cpu-forced-scaler"),
          pytest.param("cuda", "fp16", id="cuda-fp16", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device, precision", SCALED)
def test_an_overflowing_step_is_skipped_by_the_scaler_and_not_counted(device, precision,
                                                                      tmp_path):
    plain_steps, _, plain = scaled_run(tmp_path, "plain", device, precision)
    steps, _, state = scaled_run(tmp_path, "overflow", device, precision, overflow_at=5)
    assert state["step"] == plain["step"] == 12
    assert steps == plain_steps - 1  # the scaler skipped the optimizer step of step 5,
    assert state["scaler"]["scale"] == plain["scaler"]["scale"] / 2  # and halved its scale
    # an overflow is the scaler's: not a non-finite step (train.skip_nonfinite is 0 here)
    assert state["skipped_steps"] == plain["skipped_steps"] == 0


@pytest.mark.parametrize("device, precision", SCALED)
def test_gradients_are_unscaled_before_clipping(device, precision, tmp_path):
    _, unscaled, _ = scaled_run(tmp_path, "fp32", device, "fp32", scaler=False)
    _, scaled, state = scaled_run(tmp_path, "scaled", device, precision)
    assert state["scaler"]["scale"] >= 2.0**15  # the loss was scaled many times over
    # the first step: the same weights and batch; fp16 and TF32 products agree to about 1%
    assert scaled[0] == pytest.approx(unscaled[0], rel=1e-6 if device == "cpu" else 0.05)
