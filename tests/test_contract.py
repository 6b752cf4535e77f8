"""The command-line contract: streams, pipelines, exit codes, interrupts and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FOODCHAIN, ROOT, TINY, run_cli


def snapshot(folder: Path) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


class Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _checkpoint_variant(run: Path, tmp: Path, kind: str) -> str:
    path = tmp / f"{kind}.pt"
    if kind == "truncated":
        data = (run / "last.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "newer":
        state = torch.load(run / "last.pt", weights_only=True)
        state["format_version"] = 99
        torch.save(state, path)
    elif kind == "hostile":
        torch.save({"format": "charrnn-checkpoint", "payload": Evil(tmp / "PWNED")}, path)
    elif kind == "hostile-pickle":
        path.write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    return str(path)


# Each case: (id, arguments builder, text the error line must contain)
BAD_INPUT = [
    ("config-missing", lambda t, r: ["train", str(t / "nope.yaml")], "config file not found"),
    ("config-not-yaml", lambda t, r: ["train", _write(t, "c.yaml", "model: [1, 2")],
     "not valid YAML"),
    ("config-not-mapping", lambda t, r: ["train", _write(t, "c.yaml", "- a\n- b\n")],
     "expected a mapping"),
    ("unknown-section", lambda t, r: ["train", _write(t, "c.yaml", "modle: {}\n")],
     "did you mean 'model'"),
    ("unknown-key", lambda t, r: ["train", str(TINY), "--set", "model.hiden_size=3"],
     "did you mean 'hidden_size'"),
    ("wrong-type", lambda t, r: ["train", str(TINY), "--set", "model.hidden_size=big"],
     "model.hidden_size: expected int, got 'big'"),
    ("hidden-size-0", lambda t, r: ["train", str(TINY), "--set", "model.hidden_size=0"],
     "model.hidden_size: must be >= 1"),
    ("dropout-1.5", lambda t, r: ["train", str(TINY), "--set", "model.dropout=1.5"],
     "model.dropout: must be < 1"),
    ("negative-lr", lambda t, r: ["train", str(TINY), "--set", "train.lr=-0.1"],
     "train.lr: must be > 0"),
    ("seq-len-0", lambda t, r: ["train", str(TINY), "--set", "train.seq_len=0"],
     "train.seq_len: must be >= 1"),
    ("val-fraction-1", lambda t, r: ["train", str(TINY), "--set", "data.val_fraction=1"],
     "data.val_fraction: must be < 1"),
    ("unknown-model", lambda t, r: ["train", str(TINY), "--set", "model.type=transformer"],
     "registered: gru, lstm, rnn"),
    ("data-missing", lambda t, r: ["train", str(TINY), "--data", str(t / "none.txt")],
     "data path not found"),
    ("empty-corpus", lambda t, r: ["train", str(TINY), "--data", _write(t, "e.txt", "")],
     "is empty"),
    ("short-corpus", lambda t, r: ["train", str(TINY), "--data", _write(t, "s.txt", "abc" * 20)],
     "one training window needs batch_size x seq_len + 1 = 513"),
    ("not-utf8", lambda t, r: ["train", str(TINY), "--data", _write(t, "b.txt", b"ab\xffcd" * 200)],
     "invalid byte 0xff at byte offset 2"),
    ("preview-prime-unknown",  # refused only once the text is read: the run is still kept
     lambda t, r: ["train", str(TINY), "--set", 'sample.preview_prime="§"'],
     "sample.preview_prime has characters the training text lacks: '§'"),
    ("set-without-equals", lambda t, r: ["train", str(TINY), "--set", "train.lr"],
     "expected SECTION.KEY=VALUE"),
    ("checkpoint-missing", lambda t, r: ["sample", "-c", str(t / "none.pt")],
     "checkpoint not found"),
    ("checkpoint-truncated", lambda t, r: ["sample", "-c", _checkpoint_variant(r, t, "truncated")],
     "not a readable checkpoint"),
    ("checkpoint-foreign", lambda t, r: ["eval", "-c", _checkpoint_variant(r, t, "foreign")],
     "not a charrnn checkpoint"),
    ("checkpoint-newer", lambda t, r: ["info", _checkpoint_variant(r, t, "newer")],
     "written by a newer charrnn"),
    ("checkpoint-hostile", lambda t, r: ["sample", "-c", _checkpoint_variant(r, t, "hostile")],
     "refused to load"),
    ("pickle-hostile", lambda t, r: ["train", "--resume", _checkpoint_variant(r, t,
                                                                              "hostile-pickle")],
     "a pickle that could run code"),
    ("prime-unknown-chars", lambda t, r: ["sample", "-c", str(r), "--prime", "SHARKS!"],
     "not in the model's vocab: '!', 'A', 'H'"),
    ("temperature-0", lambda t, r: ["sample", "-c", str(r), "--temperature", "0"], "--greedy"),
    ("temperature-negative", lambda t, r: ["sample", "-c", str(r), "--temperature", "-1"],
     "--greedy"),
    ("top-p-0", lambda t, r: ["sample", "-c", str(r), "--top-p", "0"], "--top-p must be in (0, 1]"),
    ("top-p-1.5", lambda t, r: ["sample", "-c", str(r), "--top-p", "1.5"], "--top-p"),
    ("top-k-0", lambda t, r: ["sample", "-c", str(r), "--top-k", "0"], "--top-k must be 1 or more"),
    ("length-negative", lambda t, r: ["sample", "-c", str(r), "--length", "-5"],
     "--length must be 0 or more"),
    ("not-a-number", lambda t, r: ["sample", "-c", str(r), "--length", "many"], "--length"),
    ("device-cuda", lambda t, r: ["train", str(TINY), "--device", "cuda"],
     "CUDA is not available"),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gives_one_error_line_exit_2_and_changes_nothing(case, run_copy, tmp_path):
    name, build, expected = case
    if name == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = build(tmp_path, run_copy)
    if args[0] == "train":
        # point at a run that must survive untouched, even when told to start over there
        args += ["--out", str(run_copy), "--force"]
    before = snapshot(run_copy)
    proc = run_cli(*args)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(run_copy) == before
    assert not (tmp_path / "PWNED").exists()  # a hostile pickle never ran


def test_a_file_that_is_not_a_checkpoint_is_called_so(tmp_path, cli):
    files = {"config.yaml": b"model: {type: lstm}\n", "notes.txt": b"sharks feed on tuna\n",
             "empty.pt": b"", "plain.pkl": pickle.dumps({"weights": [1, 2]})}
    for name, content in files.items():
        code, out, err = cli("info", _write(tmp_path, name, content))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "not a charrnn checkpoint" in err and "could run code" not in err, err
    for protocol in (0, pickle.HIGHEST_PROTOCOL):
        evil = _write(tmp_path, f"evil{protocol}.pt", pickle.dumps(Evil(tmp_path / "PWNED"),
                                                                   protocol=protocol))
        code, _, err = cli("info", evil)
        assert code == 2 and "a pickle that could run code" in err, err
    assert not (tmp_path / "PWNED").exists()


def test_a_flag_error_names_the_flag_not_the_config_file(tmp_path, cli):
    config = _write(tmp_path, "my.yaml", "train: {max_steps: 10}\n")
    for args, expected in ((["--max-steps", "-3"], "--max-steps: must be >= 0, got -3"),
                           (["--max-minutes", "nan"], "--max-minutes: must be a finite number"),
                           (["--max-minutes", "0"], "--max-minutes: must be > 0"),
                           (["--threads", "0"], "--threads: must be >= 1, got 0"),
                           (["--seed", str(2**70)], "--seed: must be <= 18446744073709551615"),
                           (["--max-steps", "9" * 30], "--max-steps: must be <= 9223372036854775807")):
        code, out, err = cli("train", config, *args, "--out", tmp_path / "run")
        assert code == 2 and err.startswith(f"error: {expected}"), err
        assert "my.yaml" not in err and err.count("\n") == 1
    code, _, err = cli("train", config, "--set", "train.max_steps=-3")
    assert code == 2 and err.startswith("error: --set: train.max_steps: must be >= 0"), err
    assert "my.yaml" not in err


def test_an_out_that_cannot_be_a_directory_is_bad_input(tmp_path, cli):
    blocker = Path(_write(tmp_path, "blocker", "a file"))
    for out in (blocker, blocker / "run"):
        code, _, err = cli("train", TINY, "--out", out, "--max-steps", "1")
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert str(out) in err
    assert blocker.read_text() == "a file"


def test_an_output_file_that_cannot_be_written_is_bad_input_and_named(tiny_run, tmp_path, cli):
    folder = tmp_path / "page.html"
    folder.mkdir()
    code, _, err = cli("show", "-c", tiny_run, "--text", "sharks", "--html", folder)
    assert code == 2 and f"error: {folder}: Is a directory" in err, err
    assert ".tmp-" not in err and list(folder.iterdir()) == [] and err.count("error:") == 1


def test_asking_for_more_memory_than_there_is_is_bad_input(monkeypatch, cli):
    from charrnn.cli import sample as cli_sample

    def too_big(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 8000000000000 bytes.")

    monkeypatch.setattr(cli_sample, "load_model", too_big)
    code, _, err = cli("sample", "-c", "x")
    assert code == 2 and err.startswith("error: not enough memory") and "internal" not in err


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_more_threads_than_cores_warns(tmp_path, cli):
    # the cores counted are those this process may run on: pin it to one, whatever the machine
    before, allowed = torch.get_num_threads(), os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        code, _, err = cli("train", TINY, "--out", tmp_path / "t", "--max-steps", "0",
                           "--threads", "2")
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(before)
    assert code == 0, err
    assert "warning: train.threads = 2 is more than the 1 core(s)" in err
    code, _, err = cli("train", TINY, "--out", tmp_path / "u", "--max-steps", "0",
                       "--threads", "1")
    assert code == 0 and "warning" not in err


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("train", str(tmp_path / "nope.yaml"), env={"CHARRNN_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_existing_run_is_not_overwritten(run_copy):
    before = snapshot(run_copy)
    proc = run_cli("train", str(TINY), "--out", str(run_copy))
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert "--resume" in proc.stderr and snapshot(run_copy) == before


# ----------------------------------------------------------------------------- pipelines

def test_training_on_stdin(tmp_path):
    text = FOODCHAIN.read_text()
    out = tmp_path / "piped"
    proc = run_cli("train", str(TINY), "--data", "-", "--out", str(out), "--max-steps", "20",
                   input=text + text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and (out / "last.pt").is_file()
    assert "7,172 train / 796 val" in proc.stderr  # both copies were read


def test_sample_into_head_stops_quietly(tiny_run):
    cmd = (f"set -o pipefail; {sys.executable} -m charrnn sample -c {tiny_run} "
           f"--length 10000000 | head -c 100")
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 0  # a closed pipe is how `head` says "enough", not a failure
    assert len(proc.stdout) == 100
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr and "Broken pipe" not in stderr
    assert "BrokenPipe" not in stderr


def test_prime_file_continues_each_line(tiny_run):
    proc = run_cli("sample", "-c", str(tiny_run), "--prime-file", "-", "--length", "30",
                   "--greedy", input="sharks\ntuna\n")
    assert proc.returncode == 0, proc.stderr
    samples = proc.stdout.split("\n---\n")
    assert samples[-1] == ""
    assert samples[0].startswith("sharks feed on tuna.") and len(samples[0]) == 36
    assert samples[1].startswith("tuna feed on ") and len(samples[1]) == 34
    js = run_cli("sample", "-c", str(tiny_run), "--prime-file", "-", "--length", "30",
                 "--greedy", "--json", input="sharks\ntuna\n")
    objects = json.loads(js.stdout)
    assert [o["prime"] for o in objects] == ["sharks", "tuna"]
    assert objects[0]["text"] == samples[0][len("sharks"):]
    nul = run_cli("sample", "-c", str(tiny_run), "--prime-file", "-", "--length", "5",
                  "--separator", "\\0", input="sharks\ntuna\n")
    assert nul.stdout.count("\0") == 2


def test_eval_reads_stdin_and_json_is_the_only_output(tiny_run):
    proc = run_cli("eval", "-c", str(tiny_run), "-", "--json", input=FOODCHAIN.read_text())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chars"] == len(FOODCHAIN.read_text()) - 1
    assert proc.stdout.count("\n") == 1


def test_quiet_silences_stderr(tiny_run, tmp_path):
    proc = run_cli("train", str(TINY), "--out", str(tmp_path / "q"), "--max-steps", "10", "-q")
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
    proc = run_cli("sample", "-c", str(tiny_run), "--length", "5", "-q")
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout


def test_plain_log_lines_when_stderr_is_not_a_terminal(tmp_path):
    proc = run_cli("train", str(TINY), "--out", str(tmp_path / "p"), "--max-steps", "100")
    assert "step 50/100  loss" in proc.stderr and "\x1b[" not in proc.stderr


def test_progress_bar_on_a_terminal_without_colour(tmp_path):
    import pty
    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(TINY), "--out",
                             str(tmp_path / "tty"), "--max-steps", "60"],
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0 and proc.stdout.read() == b""
    assert "━" in text and "60/60" in text  # rich's bar
    assert "\x1b[38;" not in text and "\x1b[31m" not in text  # no colour under NO_COLOR


def test_help_and_version_do_not_import_torch():
    for args in (["--help"], ["--version"], ["train", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "charrnn", *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert "torch" not in imported, args
    version = run_cli("--version")
    assert version.stdout.startswith("charrnn ") and version.returncode == 0


# ----------------------------------------------------------------------------- interrupts

@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path):
    out = tmp_path / "int"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(TINY), "--out",
                             str(out), "--max-steps", "100000", "--set", "train.log_every=5",
                             "--set", "train.eval_every=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    for line in proc.stderr:  # wait until training is under way
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "charrnn train --resume" in err and "Traceback" not in err
    step = torch.load(out / "last.pt", weights_only=True)["step"]
    assert step >= 5
    again = run_cli("train", "--resume", str(out), "--max-steps", str(step + 10))
    assert again.returncode == 0, again.stderr
    assert f"from step {step} to {step + 10}" in again.stderr



# ----------------------------------------------------------------------------- every option

# Values that no number option may take: each must be refused with exit 2.
BAD_NUMBERS = ["", "abc", "1.5x", "inf", "-inf", "nan", "1e999", "9" * 30, "-" + "9" * 30, "-1"]
# Odd text: accepted where it means something, else refused; never a crash. Options whose help
# promises backslash escapes must refuse the broken ones.
ODD_TEXTS = ["", "\\x", "\\", "\\u12", "9" * 30, "-1", "nan", "a\nb"]
BROKEN_ESCAPES = {"\\x", "\\", "\\u12"}
SET_VALUES = ["train.max_steps=" + "9" * 30, "train.lr=nan", "train.lr=.inf", "train.seed=-1",
              "model.hidden_size=-1", "sample.length=1e999", "train.batch_size=", "=", "a.b.c=1"]


def _commands(command, path=()):
    """(path, click command) of every leaf command under `command`."""
    subs = getattr(command, "commands", None)
    if not subs:
        yield list(path), command
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def _base(path, run, tmp, case):
    """Arguments that make each command do real, quick work, by parameter name."""
    out = str(tmp / f"out{case}")
    return {
        "train": {"config": str(TINY), "data": str(FOODCHAIN), "out": out, "max_steps": "1",
                  "threads": "1", "seed": "1"},
        "sample": {"checkpoint": str(run), "length": "3", "seed": "1"},
        "eval": {"text_file": str(FOODCHAIN), "checkpoint": str(run)},
        "info": {"path": str(run)},
        "plot": {"runs": str(run)},
        "show": {"checkpoint": str(run), "text": "sharks", "json": None},
        "data get": {"name": "tinyshakespeare", "to": out},
        "data list": {"to": out},
        "export": {"run": str(run), "out": out + ".pt"},
        "compress": {"checkpoint": str(run), "out": out + ".crz"},  # binary: never to stdout
        "decompress": {"checkpoint": str(run), "out": out + ".txt"},
    }.get(" ".join(path), {})


def _argv(path, command, values):
    argv = list(path)
    for param in command.params:
        if param.name not in values:
            continue
        value = values[param.name]
        if param.param_type_name == "argument":
            argv.append(value)
        elif value is None:
            argv.append(param.opts[0])  # a flag
        else:
            argv += [param.opts[0], value]
    return argv


def _kind(param) -> type:
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    return annotation if annotation in (int, float) else str


@pytest.mark.slow
def test_every_option_of_every_command_refuses_bad_values_in_one_line(tiny_run, tmp_path, cli,
                                                                      monkeypatch):
    import typer
    from charrnn.cli.app import app
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHARRNN_CHECKPOINT", raising=False)
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "corpora"))
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", (ROOT / "data" / "tinyshakespeare.txt").as_uri())
    threads = torch.get_num_threads()
    failures, cases = [], 0

    def too_long(signum, frame):
        raise TimeoutError("still running after 60 s")

    previous = signal.signal(signal.SIGALRM, too_long)
    try:
        for path, command in _commands(typer.main.get_command(app)):
            for param in command.params:
                if getattr(param, "is_flag", False) or param.name == "help":
                    continue
                number = _kind(param) in (int, float)
                values = BAD_NUMBERS if number else ODD_TEXTS
                if "--set" in param.opts:
                    values = [*values, *SET_VALUES]
                escapes = "escape" in (getattr(param, "help", "") or "")
                for value in values:
                    cases += 1
                    args = {**_base(path, tiny_run, tmp_path, cases), param.name: value}
                    argv = _argv(path, command, args)
                    signal.alarm(60)  # a value taken as "run forever" fails, not hangs
                    try:
                        code, _, err = cli(*argv, stdin=b"")
                    finally:
                        signal.alarm(0)
                    errors = [line for line in err.splitlines() if line.startswith("error:")]
                    # a float of 1e30 is a legal, if extreme, value; an integer that large is not
                    must_refuse = (number and not (_kind(param) is float and value == "9" * 30)
                                   ) or (escapes and value in BROKEN_ESCAPES)
                    if (code not in (0, 2) or "Traceback" in err or "internal error" in err
                            or (code == 2 and len(errors) != 1)
                            or (must_refuse and code != 2)):
                        failures.append(f"{argv!r}: exit {code}: {err.strip()[-300:]}")
    finally:
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)
    assert cases > 200
    assert not failures, f"{len(failures)} of {cases}:\n" + "\n".join(failures)
