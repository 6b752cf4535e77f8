"""`charrnn sample --interactive`, driven through a pseudo-terminal as a user would."""

from conftest import run_cli
from ptyutil import Terminal


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


def test_piped_input_keeps_prompts_off_stdout(tiny_run):
    """With stdin not a terminal, stdout holds the continuations alone (no `> ` prompts, no
    newline for a Ctrl-D nobody typed)."""
    proc = run_cli("sample", "-c", str(tiny_run), "--interactive", "--greedy", "--length", "14",
                   "-q", input="sharks\n/len 5\n\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == " feed on tuna.\n\ntuna\n", proc.stdout
    assert "length 5" in proc.stderr
