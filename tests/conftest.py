"""Shared fixtures: the CLI through subprocess, a trained tiny run, and optional corpora."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
FOODCHAIN = ROOT / "data" / "foodchain.txt"


def shakespeare_file() -> Path | None:
    """Tiny Shakespeare from $CHARRNN_SHAKESPEARE, else ../shared/data beside the checkout."""
    env = os.environ.get("CHARRNN_SHAKESPEARE")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    return next((p for p in candidates if p.is_file()), None)


def run_cli(*args: str, input: str | bytes | None = None, cwd: Path | None = None,
            env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m charrnn ARGS` as a user would, capturing stdout and stderr as text."""
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("CHARRNN_CHECKPOINT", "CHARRNN_DEBUG")}  # only what a test sets
    full_env = {**inherited, "PYTHONWARNINGS": "", **(env or {})}
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run([sys.executable, "-m", "charrnn", *args], input=input,
                          capture_output=True, cwd=cwd or ROOT, env=full_env, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the corpus cache out of the user's home."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


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
    path = shakespeare_file()
    if path is None:
        pytest.skip("Tiny Shakespeare not found (set CHARRNN_SHAKESPEARE or provide "
                    "../shared/data/tinyshakespeare.txt)")
    return path


def pytest_collection_modifyitems(config, items):
    """Skip `cuda`-marked tests where no CUDA device is present."""
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
