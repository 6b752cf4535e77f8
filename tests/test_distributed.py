"""Data-parallel training under torchrun, on the CPU with gloo: 2 processes x 1 thread.

The same config gives the same model on 1 or 2 processes; rank 0 alone writes and reports; a
rank that dies ends the job and leaves last.pt whole; a resume continues exactly at the same
world size and also works at another one.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn.training.distributed import Group, start
from charrnn.errors import ConfigError
from conftest import FOODCHAIN, ROOT, TINY, run_cli

STEPS = 50
CONFIG = f"""\
data: {{path: {FOODCHAIN}, val_fraction: 0.1}}
model: {{type: lstm, embedding_dim: 16, hidden_size: 32, num_layers: 2, dropout: 0.0}}
train: {{batch_size: 8, seq_len: 16, max_steps: {STEPS}, lr: 3.0e-3, lr_schedule: constant,
        eval_every: 20, log_every: 10, device: cpu, threads: 1, seed: 3}}
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def torchrun(*args: str, **kwargs) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node=2 -m charrnn ARGS`, started (not waited for);
    standalone: a free port, so two test processes can each run one."""
    env = {**os.environ, **ONE_THREAD, "PYTHONWARNINGS": ""}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2",
                             "-m", "charrnn", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config trained for 50 steps by one process and by two."""
    base = tmp_path_factory.mktemp("dist")
    (base / "cfg.yaml").write_text(CONFIG)
    two = torchrun("train", str(base / "cfg.yaml"), "--out", str(base / "two"))
    one = run_cli("train", str(base / "cfg.yaml"), "--out", str(base / "one"), env=ONE_THREAD)
    code, _, err = finish(two)
    assert one.returncode == 0, one.stderr
    assert code == 0, err
    return base, err


@pytest.mark.slow
def test_two_processes_end_with_the_weights_of_one_and_only_rank_0_reports(runs):
    base, err = runs
    assert max_diff(weights(base / "one"), weights(base / "two")) <= 1e-5
    # every line once: rank 1 prints nothing
    assert err.count("training lstm") == 1 and err.count(f"done at step {STEPS}") == 1, err
    state = torch.load(base / "two" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    assert state["hidden"][0].shape == (2, 8, 32)  # every stream, gathered on rank 0
    assert not (base / "two" / "train.lock").exists()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker with RANK=`rank` that torchrun process `parent` started."""
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(d.name)
    return None


def start_long_run(base, out):
    """The base config under torchrun with no real step limit, saving every 5 steps; returns
    once the first last.pt is written."""
    proc = torchrun("train", str(base / "cfg.yaml"), "--out", str(out), "--max-steps",
                    "100000", "--set", "train.save_every=5")
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    return proc


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_and_the_run_resumes_exactly(runs, tmp_path):
    base, _ = runs
    killed = tmp_path / "killed"
    proc = start_long_run(base, killed)  # runs until rank 1 is killed
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    killed_at = time.monotonic()
    code, _, err = finish(proc)
    assert code != 0 and time.monotonic() - killed_at < 15
    assert "error: rank 0: lost contact with the other ranks" in err
    saved = torch.load(killed / "last.pt", weights_only=True)
    assert 0 < saved["step"] < STEPS
    shutil.copytree(killed, tmp_path / "copy")

    # the same world size continues bit for bit
    code, _, err = finish(torchrun("train", "--resume", str(killed), "--max-steps", str(STEPS)))
    assert code == 0, err
    assert max_diff(weights(base / "two"), weights(killed)) == 0

    # one process: the hidden state is re-split, and the log says so
    proc = run_cli("train", "--resume", str(tmp_path / "copy"), "--max-steps", str(STEPS),
                   env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert "world size: 2 -> 1 (the hidden state of the 8 streams re-split" in proc.stderr
    assert max_diff(weights(base / "one"), weights(tmp_path / "copy")) <= 1e-5


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_the_same_step_and_rank_0_saves(runs, tmp_path):
    base, _ = runs
    out = tmp_path / "stopped"
    proc = start_long_run(base, out)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
    _, _, err = finish(proc)
    lines = [line for line in err.splitlines() if line.startswith("interrupted at step ")]
    assert len(lines) == 1, err  # said once, by rank 0
    step = int(lines[0].split()[3].rstrip(":"))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == step


@pytest.mark.slow
def test_a_config_error_is_printed_once_not_once_per_rank(tmp_path):
    code, out, err = finish(torchrun("train", str(TINY), "--out", str(tmp_path / "run"),
                                     "--set", "model.hiden_size=3"))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and out == "" and len(errors) == 1, err
    assert "unknown key 'model.hiden_size'" in errors[0]
    assert err.count("exitcode  : 2") == 2, err  # the other rank exits with the same code
    assert not (tmp_path / "run").exists()


def test_only_errors_of_one_rank_alone_are_said_by_ranks_other_than_0(monkeypatch):
    from charrnn.cli.app import _said_by_rank_0
    from charrnn.errors import DataError, DeviceError, TrainingFailed
    assert not _said_by_rank_0(ConfigError("x"))  # no launcher
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert _said_by_rank_0(ConfigError("x")) and _said_by_rank_0(DataError("x"))
    assert not _said_by_rank_0(DeviceError("local rank 1 has no GPU"))
    assert not _said_by_rank_0(TrainingFailed("rank 1: lost contact"))
    monkeypatch.setenv("RANK", "0")
    assert not _said_by_rank_0(ConfigError("x"))


def test_a_batch_that_does_not_divide_among_the_ranks_is_refused(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="batch_size 8 does not divide among 3 processes"):
        start("cpu", 8)


def test_under_torchrun_each_process_takes_its_own_device():
    from charrnn.training.distributed import _pick_device
    from charrnn.errors import DeviceError
    assert _pick_device("cpu", 1) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert _pick_device("auto", 1) == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"each process uses cuda:LOCAL_RANK \(here cuda:0\)"):
        _pick_device("cuda:1", 0)
    with pytest.raises(DeviceError, match="CUDA .NCCL. or on the CPU .gloo."):
        _pick_device("mps", 0)


def test_without_torchrun_a_group_is_one_process():
    group = start("cpu", 8)
    assert (group.rank, group.world, group.main, group.launched) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    assert group.wrap(model) is model and group.rows(8) == slice(0, 8)
    assert group.agree(False, 3.0) == (False, 3.0) and group.average(torch.tensor([1.5])).tolist() == [1.5]


def test_under_torchrun_the_cores_are_shared_among_the_local_processes(monkeypatch):
    from charrnn.device import available_cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    group = Group(torch.device("cpu"), 1, 4, launched=True)
    assert group.cpu_threads(None) == max(1, available_cores() // 2)
    assert group.cpu_threads(3) == 3 and start("cpu", 8).cpu_threads(None) is None


def test_a_failed_collective_keeps_its_cause_in_one_line():
    from charrnn.errors import TrainingFailed
    group = Group(torch.device("cpu"), 1, 2, launched=True)
    nccl = RuntimeError(
        "NCCL error in: /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3356, "
        "unhandled cuda error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5\n"
        "ncclUnhandledCudaError: Call to CUDA function failed.\n"
        "Last error:\nCuda failure 'out of memory'")
    with pytest.raises(TrainingFailed) as exc, group.failures():
        raise nccl
    message = str(exc.value)
    assert "\n" not in message and message.startswith("rank 1: "), message
    assert "Cuda failure 'out of memory'" in message and "unhandled cuda error" in message
    assert "lost contact" not in message, message  # nothing says another rank went away
    peer = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error "
                        "[127.0.0.1]:29500: Connection reset by peer")
    with pytest.raises(TrainingFailed) as exc, group.failures():
        raise peer
    assert "lost contact with the other ranks" in str(exc.value)
    assert "Connection reset by peer" in str(exc.value), str(exc.value)
    with pytest.raises(ValueError), group.failures():  # not a collective: a bug, as it is
        raise ValueError("connection")


def _agree_worker(rank: int, port: int, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    group = Group(torch.device("cpu"), rank, 2, launched=True)
    loss = float("nan") if rank == 1 else 2.0  # one rank's loss is not finite
    stop, clock = group.agree(rank == 0, 10.0 + rank)
    (mean,) = group.average(torch.tensor([loss])).tolist()
    shared = group.share(0.5 if rank == 0 else -1.0)
    hidden = group.gather_hidden((torch.full((1, 2, 3), float(rank), dtype=torch.half),))
    results.put((rank, math.isnan(mean), stop, clock, shared, hidden[0][0, :, 0].tolist(),
                 hidden[0].dtype == torch.float32, group.rows(8)))
    group.close()


def test_ranks_share_their_decisions():
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.SimpleQueue()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_agree_worker, args=(port, results), nprocs=2,
                                          start_method="spawn")
    got = sorted(results.get() for _ in range(2))
    for rank, nan, stop, clock, shared, rows, fp32, own in got:
        # NaN anywhere is NaN everywhere; a stop on rank 0 stops rank 1; one clock; rank 0's
        # validation loss; hidden states in rank order, fp32; each rank its own rows
        assert nan and stop and clock == 10.5 and shared == 0.5 and fp32
        assert rows == [0.0, 0.0, 1.0, 1.0] and own == slice(4 * rank, 4 * rank + 4)


@pytest.mark.cuda
def test_world_size_1_under_torchrun_uses_nccl_on_the_gpu(tmp_path):
    from conftest import TINY
    env = {**os.environ, "PYTHONWARNINGS": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "charrnn", "train", str(TINY), "--out",
                           str(tmp_path / "run"), "--device", "cuda", "--max-steps", "60"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "on cuda:0" in proc.stderr
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["world_size"] == 1 and state["step"] == 60


@pytest.mark.slow
def test_rank_0_plans_and_every_rank_trains_its_plan(tmp_path):
    out = tmp_path / "planned"
    code, _, err = finish(torchrun("train", "--data", str(FOODCHAIN), "--max-steps", "6",
                                   "--out", str(out), "--set", "train.batch_size=8"))
    assert code == 0, err
    assert err.count("plan: ") == 1  # rank 0 alone plans, and says so once
    saved = (out / "config.yaml").read_text()
    assert "plan: false" in saved and "threads: null" in saved  # the cores are shared per rank
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 6


def test_ranks_agree_every_few_steps_not_at_every_step(monkeypatch):
    from charrnn.training import distributed
    calls = []

    def all_reduce(flags, group=None):  # the other rank: no stop asked, its clock at 20 s
        calls.append(1)
        flags += torch.tensor([0.0, 20.0], dtype=flags.dtype)

    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    group = Group(torch.device("cpu"), 0, 2, launched=True)
    k = distributed.AGREE_EVERY
    start = k + 3  # a resumed session agrees at its first step, then every AGREE_EVERY steps
    got = [group.agree(step >= start + 1, 10.0, step) for step in range(start, 3 * k + 1)]
    assert len(calls) == 3  # at the first step, 2k and 3k
    assert got[0] == (False, 15.0) and got[1] == (False, 15.0)  # the clock last agreed on
    assert got[2 * k - start] == (True, 15.0) and not any(s for s, _ in got[:2 * k - start])
