"""Shared fixtures: the CLI through subprocess, a trained tiny run, and the committed corpora."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
FOODCHAIN = ROOT / "data" / "foodchain.txt"
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"  # committed, see data/README.md


def cli_env(env: dict | None = None) -> dict:
    """The environment run_cli gives a command: this checkout's code first, plus `env`."""
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("CHARRNN_CHECKPOINT", "CHARRNN_DEBUG")}  # only what a test sets
    path = os.pathsep.join(filter(None, [str(ROOT), inherited.get("PYTHONPATH")]))
    return {**inherited, "PYTHONWARNINGS": "", "PYTHONPATH": path, **(env or {})}


def run_cli(*args: str, input: str | bytes | None = None, cwd: Path | None = None,
            env: dict | None = None, timeout: float = 300,
            preexec_fn=None) -> subprocess.CompletedProcess:
    """Run `python -m charrnn ARGS` as a user would, capturing stdout and stderr as text.

    `preexec_fn` runs in the child before charrnn starts (e.g. to set a resource limit)."""
    full_env = cli_env(env)
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run([sys.executable, "-m", "charrnn", *args], input=input,
                          capture_output=True, cwd=cwd or ROOT, env=full_env, timeout=timeout,
                          preexec_fn=preexec_fn)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def peak_rss(*args: str, cwd: Path | None = None) -> tuple[int, int]:
    """Run `python -m charrnn ARGS` (output discarded); (exit code, its peak RSS in bytes).

    The peak is the child's own, from os.wait4 (RUSAGE_CHILDREN would mix in earlier ones).
    """
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], cwd=cwd or ROOT,
                            env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class _Terminal(io.RawIOBase):
    """A terminal nobody types into: reading it would hang a real command."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise AssertionError("read from a terminal stdin")


class FakeStdin(io.TextIOWrapper):
    """stdin for in-process CLI runs: a pipe holding `data`, or (None) a terminal."""

    def __init__(self, data: bytes | None):
        raw = _Terminal() if data is None else io.BytesIO(data)
        super().__init__(io.BufferedReader(raw), encoding="utf-8")
        self.terminal = data is None

    def isatty(self) -> bool:
        return self.terminal


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `charrnn ARGS` in this process (fast, for bad inputs): (exit code, stdout, stderr).

    `stdin` is bytes piped in, or None for a terminal that fails the test if it is read.
    """
    from charrnn.cli.app import main

    def invoke(*args: str, stdin: bytes | str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin",
                            FakeStdin(stdin.encode() if isinstance(stdin, str) else stdin))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return invoke


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the corpus cache and downloaded corpora out of the user's home."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "data-home"))


@pytest.fixture
def renames(monkeypatch) -> list[tuple[Path, Path]]:
    """Every os.replace(src, dst) made during a test, to check writes go through fsutil."""
    done: list[tuple[Path, Path]] = []
    real = os.replace

    def spy(src, dst, *args, **kwargs):
        done.append((Path(src), Path(dst)))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    return done


def assert_written_atomically(renames: list[tuple[Path, Path]], target: Path) -> None:
    """`target` was written by charrnn.fsutil.atomic_write: its temp file renamed over it."""
    from charrnn.fsutil import temp_path
    assert (temp_path(Path(target)), Path(target)) in renames, renames


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory trained once with configs/tiny.yaml (the demo model)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    proc = run_cli("train", str(TINY), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run that a test may change."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def shakespeare() -> Path:
    """Tiny Shakespeare, committed under data/ (so no test skips for want of it)."""
    return SHAKESPEARE


def pytest_collection_modifyitems(config, items):
    """Skip `cuda`-marked tests where no CUDA device is present."""
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
