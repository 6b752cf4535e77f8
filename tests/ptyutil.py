"""Run the CLI with stdout on a pseudo-terminal of a given size, as a person would see it."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from conftest import ROOT

ESC = "\x1b"


def run_in_pty(args: list[str], *, columns: int = 100, rows: int = 30,
               env: dict | None = None, timeout: float = 120) -> str:
    """stdout of `python -m charrnn ARGS` written to a terminal (stderr is kept apart)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("NO_COLOR", "COLUMNS", "LINES", "CHARRNN_CHECKPOINT")}
    full_env.update({"TERM": "xterm-256color", **(env or {})})
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], stdout=slave,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
                            env=full_env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
