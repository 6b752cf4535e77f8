"""Run the CLI on a pseudo-terminal, as a person would see it: once through, or as a dialogue."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

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


class Terminal:
    """A child process on a pseudo-terminal, read as it writes."""

    def __init__(self, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the command
            os.chdir(ROOT)
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHARRNN_")}
            os.execve(sys.executable, [sys.executable, "-m", "charrnn", *args],
                      {**env, "TERM": "xterm"})
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> str:
        """Read until `text` has appeared; return what came before it (and consume it)."""
        end = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < end, f"{text!r} not seen in {self.seen[-500:]!r}"
            if select.select([self.fd], [], [], 0.2)[0]:
                self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
        before, _, self.seen = self.seen.partition(text)
        return before

    def ask(self, line: str) -> str:
        """Type a line and Enter; return what came back up to the next prompt."""
        self.send(line + "\r")
        return self.expect("> ")

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_code(self, timeout: float = 30) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, 9)
        raise AssertionError("the prompt did not exit")
