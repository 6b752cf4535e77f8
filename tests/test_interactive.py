"""`charrnn sample --interactive`, driven through a pseudo-terminal as a user would."""

import os
import pty
import select
import sys
import time

from conftest import ROOT


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


def test_interactive_prompt(tiny_run):
    term = Terminal("sample", "-c", str(tiny_run), "--interactive", "--greedy", "--length", "14",
                    "-q")
    term.expect("> ")
    ask = term.ask
    assert " feed on tuna." in ask("sharks")
    assert "tuna feed on" in ask("")  # an empty line: the model carries on where it stopped
    assert "length 100000000" in ask("/len 100000000")
    term.send("microbes feed on\r")
    term.expect("sharks")
    term.send("\x03")  # Ctrl-C stops the endless continuation, not the program
    term.expect("> ")
    assert "length 14" in ask("/len 14")
    assert "conversation reset" in ask("/reset")
    assert "conversation reset" in ask("\x1b[A")  # readline history: the up arrow
    assert " feed on tuna." in ask("sharks")  # afresh, as the first time
    assert "temperature 0.5" in ask("/temp 0.5")
    assert "error: /temp needs a number" in ask("/temp hot")
    term.send("\x04")  # Ctrl-D at the prompt quits
    assert term.exit_code() == 0
