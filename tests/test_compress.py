"""charrnn compress / decompress: exact round trips, sizes that follow the model's loss, and
refusals that never write a wrong text."""

import math
import subprocess
import sys

import pytest

from conftest import ROOT, cli_env, run_cli

ODD_TEXTS = {
    "empty": b"",
    "one character": b"s",
    "unknown characters": "sharks \U0001F988 feed on \u9c7c (tuna) \u00e9".encode(),
    "BOM and CR LF": b"\xef\xbb\xbfsharks feed on tuna.\r\ntuna feed on small fish.\r\n",
}


def charrnn(*args, data: bytes = b"") -> subprocess.CompletedProcess:
    """`python -m charrnn ARGS` with `data` on stdin; stdout kept as bytes."""
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], input=data,
                          capture_output=True, cwd=ROOT, env=cli_env(), timeout=300)


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_round_trip_through_a_pipe(tiny_run, name):
    data = ODD_TEXTS[name]
    packed = charrnn("compress", "-c", tiny_run, "-q", data=data)
    assert packed.returncode == 0, packed.stderr.decode()
    assert packed.stdout.startswith(b"CHARRNNZ")
    restored = charrnn("decompress", "-c", tiny_run, "-q", data=packed.stdout)
    assert restored.returncode == 0, restored.stderr.decode()
    assert restored.stdout == data


def test_a_text_takes_the_bits_its_loss_predicts(tiny_run):
    """One stream read a step at a time: the coded size is the model's loss on the text (its
    first character at a uniform cost), within 1% plus the header."""
    import torch

    from charrnn.cli.common import load_model
    from charrnn.analysis.compress import _HEADER, compress, decompress
    from charrnn.analysis.evaluate import stream_loss

    text = (ROOT / "data" / "foodchain.txt").read_text(encoding="utf-8")[:3000]
    loaded = load_model(str(tiny_run), "cpu")
    blob = compress(text.encode(), loaded.model, loaded.vocab, streams=1)
    ids = loaded.vocab.encode(text)
    loss, count = stream_loss(loaded.model, ids, torch.device("cpu"), streams=1,
                              seq_len=len(ids) - 1)
    predicted_bits = loss * count / math.log(2) + math.log2(len(loaded.vocab) + 1)
    coded_bits = 8 * (len(blob) - _HEADER.size)
    assert abs(coded_bits - predicted_bits) <= 0.01 * predicted_bits + 64, \
        (coded_bits, predicted_bits)
    assert decompress(blob, loaded.model, loaded.vocab) == text.encode()


def test_files_in_and_out_and_an_existing_file_is_kept(tiny_run, tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(ODD_TEXTS["BOM and CR LF"])
    packed, back = tmp_path / "a.crz", tmp_path / "back.txt"
    assert charrnn("compress", "-c", tiny_run, source, "-o", packed).returncode == 0
    assert charrnn("decompress", "-c", tiny_run, packed, "-o", back).returncode == 0
    assert back.read_bytes() == source.read_bytes()
    before = packed.read_bytes()
    again = charrnn("compress", "-c", tiny_run, source, "-o", packed)
    assert again.returncode == 2 and b"--force" in again.stderr
    assert packed.read_bytes() == before
    assert charrnn("compress", "-c", tiny_run, source, "-o", packed, "--force").returncode == 0


@pytest.mark.slow
def test_another_model_is_refused_naming_both_fingerprints(tiny_run, tmp_path):
    other = tmp_path / "other"
    trained = run_cli("train", ROOT / "configs" / "tiny.yaml", "--out", other, "--max-steps",
                      "5", "--seed", "7", "-q")
    assert trained.returncode == 0, trained.stderr
    packed = charrnn("compress", "-c", tiny_run, "-q", data=b"sharks feed on tuna.")
    wrong = charrnn("decompress", "-c", other, "-o", tmp_path / "out.txt",
                    data=packed.stdout)
    assert wrong.returncode == 2
    lines = wrong.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("error: the file was compressed with another model")
    assert "Traceback" not in wrong.stderr.decode()
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "flipped", "not ours", "header length"])
def test_a_damaged_file_is_an_error_and_nothing_is_written(tiny_run, tmp_path, damage):
    text = (ROOT / "data" / "foodchain.txt").read_bytes()[:2000]
    blob = bytearray(charrnn("compress", "-c", tiny_run, "-q", data=text).stdout)
    if damage == "truncated":
        blob = blob[:-8]
    elif damage == "flipped":
        blob[len(blob) // 2] ^= 0x55
    elif damage == "header length":
        blob[17] = 0xFF
    else:
        blob = bytearray(b"sharks feed on tuna. " * 10)
    out = tmp_path / "out.txt"
    proc = charrnn("decompress", "-c", tiny_run, "-o", out, data=bytes(blob))
    last = proc.stderr.decode().strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: ") and "internal" not in last, last
    assert not out.exists()
    piped = charrnn("decompress", "-c", tiny_run, data=bytes(blob))
    assert piped.returncode != 0 and piped.stdout == b""  # never a wrong text on stdout


def test_text_that_is_not_utf8_is_an_error_naming_the_offset(tiny_run):
    proc = charrnn("compress", "-c", tiny_run, data=b"sharks \xff feed")
    assert proc.returncode == 2
    assert "byte 7" in proc.stderr.decode() and proc.stdout == b""


def test_compressed_data_is_not_written_to_a_terminal(tiny_run):
    import os
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "charrnn", "compress", "-c", str(tiny_run),
                               "README.md"], stdout=slave, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, cwd=ROOT, env=cli_env(), timeout=300)
        os.set_blocking(master, False)
        try:
            shown = os.read(master, 1 << 16)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: compressed data is binary")
    assert b"CHARRNNZ" not in shown


def test_coding_runs_on_one_thread_whatever_the_process_uses(tiny_run, monkeypatch):
    """The arithmetic of a step must not depend on the machine's core count: every step is
    taken on one thread, and the caller's thread count is given back."""
    import torch

    from charrnn.analysis import compress as codec
    from charrnn.cli.common import load_model

    seen, real = [], codec._Coder.after
    monkeypatch.setattr(codec._Coder, "after",
                        lambda self, symbols: (seen.append(torch.get_num_threads()),
                                               real(self, symbols))[1])
    loaded = load_model(str(tiny_run), "cpu")
    text = (ROOT / "data" / "foodchain.txt").read_bytes()[:5000]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        blob = codec.compress(text, loaded.model, loaded.vocab)
        torch.set_num_threads(1)
        assert codec.decompress(blob, loaded.model, loaded.vocab) == text
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


REPEATED = b"bold birds sing in dark rooms, each one calm. " * 20  # unlike the demo's text


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_adapt_round_trip_through_a_pipe(tiny_run, name):
    """--adapt: the decoder repeats the encoder's learning steps (a window of 8: several steps
    even in these short texts, escapes among what is learnt from), with no option of its own."""
    data = ODD_TEXTS[name]
    packed = charrnn("compress", "-c", tiny_run, "-q", "--adapt", "--adapt-window", "8",
                     data=data)
    assert packed.returncode == 0, packed.stderr.decode()
    restored = charrnn("decompress", "-c", tiny_run, "-q", data=packed.stdout)
    assert restored.returncode == 0, restored.stderr.decode()
    assert restored.stdout == data


def test_adapt_settings_travel_in_the_header_so_decoding_cannot_mismatch(tiny_run):
    """Whatever the settings, decompress reads them from the file (it has no --adapt options);
    a header whose settings were changed is an error, never a wrong text. Three streams over
    1,501 characters: the last row is shorter, and learns only from what it has."""
    import struct

    from charrnn.analysis.adapt import AdaptSettings
    from charrnn.cli.common import load_model
    from charrnn.analysis.compress import _HEADER, CompressError, Header, compress, decompress

    loaded = load_model(str(tiny_run), "cpu")
    data = (ROOT / "data" / "foodchain.txt").read_bytes()[:1501]
    settings = AdaptSettings(lr=0.05, decay=0.01, window=16, streams=3)
    blob = compress(data, loaded.model, loaded.vocab, adapt=settings)
    header = Header.unpack(blob)
    assert (header.mode, header.adapt, header.streams) == ("adapt", settings, 3)
    assert decompress(blob, loaded.model, loaded.vocab) == data
    changed = bytearray(blob)
    struct.pack_into("<d", changed, _HEADER.size, 0.5)  # another learning rate
    with pytest.raises(CompressError):
        decompress(bytes(changed), loaded.model, loaded.vocab)
    refused = charrnn("decompress", "-c", tiny_run, "--adapt", data=blob)
    assert refused.returncode == 2 and b"--adapt" in refused.stderr


def test_adapting_makes_a_smaller_file_where_it_helps_and_keeps_the_model_file(run_copy):
    import hashlib
    before = {f.name: hashlib.sha256(f.read_bytes()).digest() for f in run_copy.iterdir()}
    static = charrnn("compress", "-c", run_copy, "-q", data=REPEATED)
    adapted = charrnn("compress", "-c", run_copy, "-q", "--adapt", data=REPEATED)
    assert static.returncode == 0 and adapted.returncode == 0, adapted.stderr.decode()
    assert len(adapted.stdout) < 0.8 * len(static.stdout), (len(adapted.stdout),
                                                             len(static.stdout))
    assert {f.name: hashlib.sha256(f.read_bytes()).digest()
            for f in run_copy.iterdir()} == before


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_scratch_round_trips(name):
    from charrnn.analysis.compress import compress, decompress
    from charrnn.analysis.scratch import ScratchPlan
    data = ODD_TEXTS[name] * 3
    assert decompress(compress(data, scratch=ScratchPlan(hidden_size=32, streams=2))) == data


@pytest.mark.slow
def test_scratch_through_a_pipe_needs_no_model_file(tmp_path):
    """--scratch: no -c on either side, and no run anywhere to fall back on; the decoder
    rebuilds the model and repeats its learning from what the file records."""
    data = ODD_TEXTS["BOM and CR LF"] * 3
    env = {**cli_env(), "CHARRNN_CHECKPOINT": ""}
    run = lambda *args, data: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "charrnn", *args], input=data, capture_output=True,
        cwd=tmp_path, env=env, timeout=300)
    packed = run("compress", "--scratch", "--streams", "2", "-q", data=data)
    assert packed.returncode == 0, packed.stderr.decode()
    restored = run("decompress", "-q", data=packed.stdout)
    assert restored.returncode == 0, restored.stderr.decode()
    assert restored.stdout == data


def test_a_scratch_model_learns_as_it_reads():
    """A text that repeats costs far less than its alphabet's uniform code once the model has
    learnt it (an untrained model would pay about the uniform cost all the way)."""
    from charrnn.analysis.compress import Header, compress, decompress
    from charrnn.analysis.scratch import ScratchPlan

    data = REPEATED * 3
    blob = compress(data, scratch=ScratchPlan(hidden_size=64, streams=2, window=8, lr=0.01))
    header = Header.unpack(blob)
    uniform_bits = len(data) * math.log2(len(set(data.decode())) + 1)
    assert 8 * (len(blob) - header.nbytes) < 0.35 * uniform_bits
    assert decompress(blob) == data


def test_the_scratch_plan_travels_in_the_header_and_a_changed_one_is_refused():
    import json

    from charrnn.analysis.compress import CompressError, Header, compress, decompress
    from charrnn.analysis.scratch import ScratchPlan, read_description

    data = (ROOT / "data" / "foodchain.txt").read_bytes()[:2000]
    plan = ScratchPlan(hidden_size=32, streams=3, window=8, seed=7)
    blob = compress(data, scratch=plan)
    header = Header.unpack(blob)
    found, alphabet, versions = read_description(header.scratch)
    assert (header.mode, found, alphabet) == ("scratch", plan, "".join(sorted(set(data.decode()))))
    assert versions["charrnn"] and versions["torch"]
    changed = header.scratch.replace(b'"seed": 7', b'"seed": 8')
    assert changed != header.scratch and json.loads(changed)
    with pytest.raises(CompressError, match="corrupt"):
        decompress(blob.replace(header.scratch, changed))


def test_scratch_refuses_a_model_or_adapt():
    for extra in (["-c", "runs/any"], ["--adapt"]):
        proc = charrnn("compress", "--scratch", *extra, data=b"sharks")
        assert proc.returncode == 2 and proc.stdout == b""
        assert proc.stderr.decode().startswith("error: --scratch uses no model file")


def test_a_scratch_file_that_restores_wrongly_names_the_versions_that_made_it(monkeypatch):
    """Scratch decoding repeats floating-point training: when the restored text's sha256 does
    not match and the file was made by another charrnn or torch, the error says which."""
    import charrnn
    from charrnn.analysis.compress import _HEADER, CompressError, compress, decompress
    from charrnn.analysis.scratch import ScratchPlan

    real = charrnn.__version__
    monkeypatch.setattr(charrnn, "__version__", "0.0.1")
    blob = bytearray(compress(b"sharks feed on tuna. " * 4, scratch=ScratchPlan(hidden_size=16)))
    monkeypatch.setattr(charrnn, "__version__", real)
    sha_at = _HEADER.size - 8 - 32 - 32  # the text's sha256 (then the fingerprint, the words)
    blob[sha_at] ^= 0xFF
    with pytest.raises(CompressError, match=f"charrnn 0.0.1 there, {real} here"):
        decompress(bytes(blob))


def test_the_output_never_replaces_the_model_in_use(run_copy, tmp_path):
    model = run_copy / "best.pt"
    before = model.read_bytes()
    text = (ROOT / "data" / "foodchain.txt").read_bytes()[:300]
    proc = charrnn("compress", "-c", model, "-o", model, "--force", data=text)
    assert proc.returncode == 2 and b"is the model file in use" in proc.stderr, proc.stderr
    blob = tmp_path / "text.crz"
    assert charrnn("compress", "-c", model, "-o", blob, "-q", data=text).returncode == 0
    proc = charrnn("decompress", "-c", run_copy, blob, "-o", model, "--force")
    assert proc.returncode == 2 and b"is the model file in use" in proc.stderr, proc.stderr
    assert model.read_bytes() == before
    proc = charrnn("compress", "-c", model, "-o", tmp_path, data=text)
    assert proc.returncode == 2 and b"is a folder" in proc.stderr, proc.stderr
