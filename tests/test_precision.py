"""Precision: what each setting means per device, bf16 that is really bf16, fp32 hidden states
in checkpoints, and the removed train.compile key."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.cli.app import main
from charrnn.config import config_from_dict
from charrnn.device import autocast, grad_scaler, resolve_precision
from charrnn.errors import ConfigError, DeviceError
from charrnn.models.recurrent import CharRNN
from conftest import TINY, run_cli

CPU = torch.device("cpu")


def test_auto_and_fp32_are_fp32_on_the_cpu_and_nothing_is_cast():
    assert resolve_precision("auto", CPU) == resolve_precision("fp32", CPU) == "fp32"
    assert not grad_scaler(CPU, "fp32").is_enabled()
    with autocast(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precisions_on_the_cpu_are_refused_not_ignored(precision):
    with pytest.raises(DeviceError, match=f"precision {precision} needs a CUDA GPU.*fp32"):
        resolve_precision(precision, CPU)


def test_bf16_on_the_cpu_is_one_error_line_and_no_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", str(TINY), "--out", str(out), "--set", "train.precision=bf16"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: train.precision bf16 needs a CUDA GPU")
    assert len(err.splitlines()) == 1 and not out.exists()


def test_bf16_autocast_runs_the_recurrent_layer_in_bf16_with_fp32_weights():
    # autocast alone would hand cuDNN's recurrent kernel fp16; bf16 must mean bf16
    model = CharRNN("lstm", 10, 8, 16, 2, 0.0)
    x = torch.randint(0, 10, (3, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, hidden = model(x)
        logits, hidden = model(x, hidden)
    assert hidden[0].dtype == hidden[1].dtype == torch.bfloat16
    logits.float().sum().backward()
    grad = model.rnn.weight_hh_l1.grad
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0
    assert model(x)[1][0].dtype == torch.float32  # outside autocast: fp32 again


def test_a_training_step_runs_the_recurrent_layers_once(tmp_path, monkeypatch):
    """So bf16's weight copies (made per run of the layers) are made once per optimizer step."""
    from charrnn.config import load_config
    from charrnn.models import recurrent
    from charrnn.training.loop import train
    runs, run_recurrent = [], recurrent.run_recurrent
    monkeypatch.setattr(recurrent, "run_recurrent",
                        lambda *a: runs.append(torch.is_grad_enabled()) or run_recurrent(*a))
    cfg = load_config(TINY, ["train.max_steps=7", "train.eval_every=1000", "train.threads=1",
                             "sample.preview_length=0", "model.hidden_size=16"])
    assert train(cfg, run_dir=str(tmp_path / "run")).step == 7
    assert runs.count(True) == 7


def test_compile_key_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="train.compile was removed: torch.compile leaves"):
        config_from_dict({"train": {"compile": True}})


@pytest.mark.slow
def test_old_checkpoint_with_compile_and_a_half_hidden_state_resumes_and_samples(run_copy):
    # a run saved by an older charrnn on a GPU: compile in its config, an fp16 hidden state
    state = load_checkpoint(run_copy / "last.pt")
    assert state["hidden"][0].dtype == torch.float32  # what charrnn writes now
    state["config"]["train"]["compile"] = False
    state["hidden"] = tuple(h.half() for h in state["hidden"])
    del state["path"]
    save_checkpoint(state, run_copy / "last.pt")
    steps = state["step"] + 5
    proc = run_cli("train", "--resume", str(run_copy), "--max-steps", str(steps), "-q")
    assert proc.returncode == 0, proc.stderr
    resumed = load_checkpoint(run_copy / "last.pt")
    assert resumed["step"] == steps and "compile" not in resumed["config"]["train"]
    assert all(h.dtype == torch.float32 for h in resumed["hidden"])
    # it went on from the trained weights (a fresh model's loss is ln 23 = 3.1)
    assert logged_losses(run_copy)[-1] == (steps, pytest.approx(0.0, abs=0.1))
    assert_knows_the_chain(run_copy / "last.pt")


def logged_losses(run) -> list[tuple[int, float]]:
    """(step, train_loss) as metrics.jsonl logged them."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]


def assert_knows_the_chain(checkpoint, *device) -> None:
    proc = run_cli("sample", "-c", str(checkpoint), *device, "--prime", "sharks", "--greedy",
                   "--length", "40")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sharks feed on tuna.\ntuna feed on"), proc.stdout


NO_BF16 = "this GPU has no native bf16 (compute capability below 8.0)"


@pytest.mark.cuda
@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("fp16", torch.float16),
                                              ("bf16", torch.bfloat16)])
def test_cuda_autocast_gives_the_recurrent_layer_the_dtype_asked_for(precision, dtype):
    from charrnn.device import configure_precision
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(NO_BF16)
    cuda = torch.device("cuda")
    model = CharRNN("lstm", 10, 8, 16, 2, 0.0).to(cuda)
    x = torch.randint(0, 10, (3, 5), device=cuda)
    configure_precision(precision, cuda)
    with autocast(cuda, precision):
        _, (h, c) = model(x)
    assert h.dtype == c.dtype == dtype, precision
    assert grad_scaler(cuda, precision).is_enabled() == (precision == "fp16")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_run_resumes_and_samples_on_the_cpu(precision, tmp_path):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(NO_BF16)
    out = tmp_path / "run"
    proc = run_cli("train", str(TINY), "--out", str(out), "--device", "cuda", "--max-steps",
                   "100", "--set", f"train.precision={precision}", "-q")
    assert proc.returncode == 0, proc.stderr
    state = load_checkpoint(out / "last.pt")
    assert all(h.dtype == torch.float32 for h in state["hidden"])
    # it learned: fp32 on the CPU logs 0.9 at step 50 (from ln 23 = 3.1) and 0.016 at step 100
    (_, at_50), (_, at_100) = logged_losses(out)
    assert at_100 < 0.2 and at_100 < at_50 / 3, logged_losses(out)
    assert state["val_loss"] < 0.2
    proc = run_cli("train", "--resume", str(out), "--device", "cpu", "--max-steps", "120",
                   "--set", "train.precision=fp32", "-q")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(out / "last.pt")["step"] == 120
    assert logged_losses(out)[-1] == (120, pytest.approx(0.0, abs=0.2))  # went on from there
    assert_knows_the_chain(out, "--device", "cpu")
