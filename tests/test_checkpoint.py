"""Checkpoints: atomic writes, safe versioned loads, and old formats."""

import contextlib
import errno
import json
import math
import os
import resource
import shutil
from pathlib import Path

import pytest
import torch

from charrnn import checkpoint as ckpt
from charrnn.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from charrnn.errors import CheckpointError, TrainingFailed

from conftest import FOODCHAIN, TINY, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _state(step=1):
    return {"config": {}, "vocab": ["a", "b"], "model": {"w": torch.ones(2)}, "step": step}


def test_save_then_load_round_trip(tmp_path):
    save_checkpoint(_state(3), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 3 and state["format_version"] == ckpt.FORMAT_VERSION
    assert torch.equal(state["model"]["w"], torch.ones(2))
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # plain data and tensors only
    assert raw["format"] == "charrnn-checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1), path)
    before = path.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(TrainingFailed, match="No space left on device.*previous checkpoint"):
        save_checkpoint(_state(2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """`ulimit -f` for this process: a write past `limit` bytes fails with EFBIG (Python
    ignores SIGXFSZ); the soft limit alone is lowered, so it can be raised back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_file_size_limit_is_a_failed_write_like_a_full_disk(tmp_path):
    """torch reports the failed write as a RuntimeError ("unexpected pos"): it is still one."""
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1), path)
    before = path.read_bytes()
    big = {**_state(2), "model": {"w": torch.ones(100_000)}}  # 400 KB
    with file_size_limit(300_000), pytest.raises(TrainingFailed) as exc:
        save_checkpoint(big, path)
    assert "File too large" in str(exc.value) and "previous checkpoint" in str(exc.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.slow
def test_training_under_a_file_size_limit_fails_in_one_line_and_keeps_last_pt(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", str(TINY), "--out", str(run), "--max-steps", "2", "--threads", "1",
                   "-q")
    assert proc.returncode == 0, proc.stderr
    before = (run / "last.pt").read_bytes()
    assert len(before) > 600 * 512  # `ulimit -f 600`: no checkpoint of this model fits
    proc = run_cli("train", "--resume", str(run), "--max-steps", "3", "-q",
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                         (600 * 512, 600 * 512)))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: could not write checkpoint") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert "File too large" in proc.stderr and "internal error" not in proc.stderr
    assert (run / "last.pt").read_bytes() == before


def test_unwritable_target_gives_a_clear_error(tmp_path):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    (tmp_path / f".last.pt.tmp-{os.getpid()}").mkdir()  # the temporary file cannot be created,
    with pytest.raises(TrainingFailed, match="could not write checkpoint"):  # even by root
        save_checkpoint(_state(2), tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == before
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingFailed, match="could not write checkpoint"):  # nor its folder
        save_checkpoint(_state(2), tmp_path / "file" / "last.pt")


def test_run_directory_resolves_to_best_or_last(tmp_path):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    assert resolve_checkpoint(tmp_path).name == "last.pt"
    save_checkpoint(_state(1), tmp_path / "best.pt")
    assert resolve_checkpoint(tmp_path).name == "best.pt"
    assert resolve_checkpoint(tmp_path, prefer="last").name == "last.pt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def _greedy_by_hand(path: Path, prime: str, length: int) -> str:
    """Greedy decoding with the file's weights in plain torch modules, not charrnn's loader."""
    raw = torch.load(path, weights_only=True)
    weights, vocab, model_cfg = raw["model"], raw["vocab"], raw["config"]["model"]
    embed = torch.nn.Embedding.from_pretrained(weights["embed.weight"])
    rnn = torch.nn.LSTM(model_cfg["embedding_dim"], model_cfg["hidden_size"], batch_first=True)
    rnn.load_state_dict({k[len("rnn."):]: v for k, v in weights.items() if k.startswith("rnn.")})
    head = torch.nn.Linear(model_cfg["hidden_size"], len(vocab))
    head.load_state_dict({"weight": weights["head.weight"], "bias": weights["head.bias"]})
    text, x, hidden = prime, torch.tensor([[vocab.index(c) for c in prime]]), None
    with torch.no_grad():
        for _ in range(length):
            out, hidden = rnn(embed(x), hidden)
            x = head(out[:, -1]).argmax(-1, keepdim=True)
            text += vocab[int(x)]
    return text


def test_version_1_fixture_still_loads_and_samples():
    state = load_checkpoint(FIXTURES / "v1.pt")
    assert state["format_version"] == ckpt.FORMAT_VERSION and state["vocab"]
    proc = run_cli("sample", "-c", str(FIXTURES / "v1.pt"), "--prime", "sharks", "--length",
                   "10", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sharks") and len(proc.stdout) == len("sharks") + 10 + 1
    proc = run_cli("sample", "-c", str(FIXTURES / "v1.pt"), "--prime", "sharks", "--length",
                   "30", "--greedy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _greedy_by_hand(FIXTURES / "v1.pt", "sharks", 30) + "\n"  # its weights


def test_version_1_fixture_resumes_and_learns(tmp_path):
    # written before checkpoints held a text fingerprint, a schedule, a loss scaler, a train
    # window or a start time; its config names data/foodchain.txt from the project root
    shutil.copy(FIXTURES / "v1.pt", tmp_path / "last.pt")
    proc = run_cli("train", "--resume", str(tmp_path), "--max-steps", "150", "--threads", "1",
                   "--set", "train.lr=0.02", "--set", "train.log_every=10", "-q")
    assert proc.returncode == 0, proc.stderr
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 150 and state["data"]["chars"] == len(FOODCHAIN.read_text())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(losses) == 15 and losses[-1] < 0.75 * losses[0], losses  # from ln 23 = 3.1
    assert state["val_loss"] < 0.8 * math.log(len(state["vocab"]))


def test_newer_format_is_refused(tmp_path):
    state = torch.load(FIXTURES / "v1.pt", weights_only=True)
    state["format_version"] = ckpt.FORMAT_VERSION + 1
    torch.save(state, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer charrnn"):
        load_checkpoint(tmp_path / "new.pt")


@pytest.mark.cuda
def test_gpu_checkpoint_loads_on_cpu(tmp_path):
    out = tmp_path / "gpu"
    proc = run_cli("train", str(TINY), "--out", str(out), "--device", "cuda", "-q")
    assert proc.returncode == 0, proc.stderr
    state = load_checkpoint(out / "last.pt", map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    proc = run_cli("sample", "-c", str(out), "--device", "cpu", "--greedy", "--prime", "sharks",
                   "--length", "20")
    assert proc.returncode == 0 and proc.stdout.startswith("sharks feed on tuna."), proc.stderr


def test_interrupt_during_a_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()

    def interrupted(obj, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt  # a second Ctrl-C while the file is being written

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
