"""`charrnn sample` on the trained demo model: primes, escapes, stop texts, beams, bad options."""

import json
import subprocess
import sys

import pytest

from conftest import FOODCHAIN, peak_rss, run_cli

CHAIN = {"sharks feed on": " tuna.", "microbes feed on": " sharks.",
         "plants feed on": " microbes.", "math, science,": " english literature,"}


def test_each_sample_continues_its_own_prime(tiny_run, tmp_path, cli):
    primes = tmp_path / "primes.txt"
    primes.write_text("sharks feed on\n\nmicrobes feed on\nplants feed on\n\nmath, science,\n")
    code, out, err = cli("sample", "-c", str(tiny_run), "--prime-file", str(primes),
                         "--num-samples", "2", "--length", "25", "--temperature", "0.3",
                         "--seed", "3", "--json")
    assert code == 0, err
    assert "skipped 2 blank line(s)" in err
    got = json.loads(out)
    assert [o["prime"] for o in got] == [p for p in CHAIN for _ in range(2)]
    for o in got:
        assert len(o["text"]) == 25 and o["text"].startswith(CHAIN[o["prime"]]), o


def test_length_zero_prints_only_the_newline(tiny_run, cli):
    assert cli("sample", "-c", str(tiny_run), "--length", "0", "-q")[1] == "\n"
    assert cli("sample", "-c", str(tiny_run), "--length", "0", "--prime", "tuna",
               "-q")[1] == "tuna\n"


def test_tiny_temperature_and_prime_escapes(tiny_run, cli):
    base = ["sample", "-c", str(tiny_run), "--length", "30", "-q"]
    greedy = cli(*base, "--prime", "sharks", "--greedy")[1]
    assert cli(*base, "--prime", "sharks", "--temperature", "1e-9")[1] == greedy
    assert cli(*base, "--prime", "sharks", "--temperature", "1e-300")[1] == greedy
    code, out, _ = cli(*base, "--prime", "sharks feed on tuna.\\n", "--greedy")
    assert code == 0 and out.startswith("sharks feed on tuna.\ntuna feed on small fish.")


def test_stop_ends_each_sample_at_its_first_stop_text(tiny_run, cli):
    base = ["sample", "-c", str(tiny_run), "-q", "--length", "200"]
    assert cli(*base, "--prime", "sharks", "--stop", ".")[1] == "sharks feed on tuna.\n"
    code, out, _ = cli(*base, "--prime", "sharks", "--stop", "\\n", "--stop", "tuna",
                       "--greedy")
    assert out == "sharks feed on tuna\n"
    out = cli(*base, "--prime", "sharks", "--stop", "zebra", "--length", "7")[1]
    assert len(out) == len("sharks") + 7 + 1
    out = cli(*base, "--prime", "microbes feed on", "-N", "3", "--stop", ".", "--seed", "2",
              "--separator", "|")[1]
    assert out == "microbes feed on sharks.|" * 3


def test_beam_search(tiny_run, cli):
    base = ["sample", "-c", str(tiny_run), "-q", "--prime", "sharks", "--length", "20"]
    code, out, _ = cli(*base, "--beam", "4")
    assert code == 0 and out.startswith("sharks feed on tuna.\n") and len(out) == 6 + 20 + 1
    assert cli(*base, "--beam", "4")[1] == out  # deterministic
    code, out, _ = cli(*base, "--beam", "4", "--num-samples", "3", "--json")
    found = json.loads(out)
    assert len(found) == 3 and found[0]["text"] == "\x20feed on tuna.\ntuna "
    assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
    # the runners-up change a character or two of a text the model knows by heart (about -6
    # nats); the worst candidates score about -400
    assert found[2]["score"] > -20, found
    code, out, _ = cli(*base, "--beam", "3", "--stop", ".")
    assert out == "sharks feed on tuna.\n"


@pytest.mark.parametrize("args, message", [
    (["--prime", "a", "--prime-file", "-"], "--prime and --prime-file cannot be used together"),
    (["--greedy", "--temperature", "0.5"], "--greedy always takes the likeliest character: "
                                           "drop --temperature"),
    (["--greedy", "--top-k", "3", "--top-p", "0.5"], "drop --top-k and --top-p"),
    (["--prime-file", "no/such/primes.txt"], "prime file not found: no/such/primes.txt"),
    (["--prime-file", "tests"], "prime file is a folder, not a file: tests"),
    (["--separator", "\\x", "-N", "2"], "--separator: '\\x' holds a broken backslash escape"),
    (["--prime", "\\N{nope}"], "--prime"),
    (["--stop", "\\u12"], "--stop"),
    (["--stop", ""], "--stop needs a non-empty TEXT"),
    (["--beam", "0", "--prime", "a"], "--beam must be 1 or more"),
    (["--beam", "2"], "--beam needs a --prime"),
    (["--beam", "2", "--prime", "a", "-N", "3"], "--num-samples 3 is more than --beam 2"),
    (["--beam", "1", "--prime", "a", "-N", "2"], "beam search keeps only 1 candidate\n"),
    (["--beam", "2", "--prime", "a", "--temperature", "1"], "--beam is deterministic"),
    (["--beam", "2", "--prime", "a", "--seed", "1"], "drop --seed"),
    (["--temperature", "nan"], "--temperature must be above 0"),
    (["--beam", "2", "--prime", "a", "--length-penalty", "inf"], "--length-penalty must be"),
    (["--length-penalty", "0.5"], "--length-penalty ranks beams: use it with --beam N"),
    (["--interactive", "--json", "-N", "2"], "--interactive is one conversation: drop --json and "
                                             "--num-samples"),
    (["-N", "100000000000", "--length", "1"], "--num-samples 100000000000 with --length 1 needs "
                                              "about"),
    (["-N", "2", "--length", str(10**15)], "more than this machine's"),
])
def test_bad_sample_options(tiny_run, cli, args, message):
    code, out, err = cli("sample", "-c", str(tiny_run), *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_long_cap_with_stop_texts_or_one_streamed_sample_is_not_refused_for_memory(tiny_run,
                                                                                      cli):
    """With --stop, --length is a cap, not a promise; one sample streams: only the samples'
    state is counted."""
    code, out, err = cli("sample", "-c", str(tiny_run), "-N", "2", "--length", str(10**15),
                         "--stop", ".", "--prime", "sharks", "--seed", "1")
    assert code == 0, err
    assert [t.endswith(".") for t in out.split("\n---\n")[:2]] == [True, True], out
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "sample", "-c", str(tiny_run),
                             "--length", str(10**15), "--prime", "sharks"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1000).startswith(b"sharks")  # streaming, not refused
    proc.kill()
    proc.wait()


def test_prime_file_that_is_missing_through_the_command(tiny_run):
    proc = run_cli("sample", "-c", str(tiny_run), "--prime-file", "missing.txt")
    assert proc.returncode == 2 and proc.stderr == "error: prime file not found: missing.txt\n"


@pytest.mark.slow
def test_a_long_prime_is_read_in_chunks(tiny_run, tmp_path):
    """A prime on one line, 50,000 and 300,000 characters long: the longer one costs its text
    and ids (4 to 8 bytes a character measured), not the model's activations over all of it
    (3.7 KB a character when a prime was read in one piece)."""
    line = FOODCHAIN.read_text().replace("\n", " ")
    peaks = {}
    for chars in (50_000, 300_000):
        prime = tmp_path / f"prime{chars}.txt"
        prime.write_text((line * (chars // len(line) + 1))[:chars] + "\n")
        code, peaks[chars] = peak_rss("sample", "-c", str(tiny_run), "--prime-file", str(prime),
                                      "--length", "5", "--seed", "1", "-q")
        assert code == 0
    per_char = (peaks[300_000] - peaks[50_000]) / 250_000
    assert per_char < 20, f"{per_char:.0f} bytes a character"


def test_a_text_that_ends_in_a_newline_gets_no_second_one(tiny_run, cli):
    """The closing newline (or the separator's leading one) is not added after a text that
    already ends in one: no blank line before a separator, no empty last line."""
    base = ["sample", "-c", str(tiny_run), "-q", "--prime", "sharks", "--stop", "\\n"]
    assert cli(*base, "--greedy")[1] == "sharks feed on tuna.\n"
    assert cli(*base, "--greedy", "-N", "2")[1] == "sharks feed on tuna.\n---\n" * 2
    assert cli(*base, "--beam", "2")[1] == "sharks feed on tuna.\n"
    out = cli(*base, "--beam", "2", "-N", "2")[1]
    assert out.startswith("sharks feed on tuna.\n---\n") and "\n\n" not in out, out
    assert cli(*base, "--greedy", "-N", "2", "--separator", "|")[1] == \
        "sharks feed on tuna.\n|" * 2  # a separator that does not start a line is kept whole
