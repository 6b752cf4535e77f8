"""Corpora: fetching through the real download code from a local HTTP server, verification,
atomic writes, `charrnn data get/list`, and `corpus_path` for configs that name a corpus."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from charrnn.text import corpora
from charrnn.text.corpora import CorpusSpec, FetchError, corpus_path, fetch, list_corpora
from charrnn.errors import DataError
from conftest import assert_written_atomically, run_cli

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class Server:
    """Files served from memory on 127.0.0.1; each entry is (body, Content-Length claimed)."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, int]] = {}
        self.hits: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                served.hits.append(self.path)
                if self.path not in served.files:
                    self.send_error(404)
                    return
                body, length = served.files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # shorter than claimed: the connection just closes

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, path: str, body: bytes, length: int | None = None) -> str:
        self.files[path] = (body, len(body) if length is None else length)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for key, value in NO_PROXY.items():
        monkeypatch.setenv(key, value)
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def shakespeare_bytes(shakespeare) -> bytes:
    return shakespeare.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


TOY_TEXT = b"the quick brown fox jumps over the lazy dog\n" * 500


@pytest.fixture
def toy_zip(monkeypatch, server):
    """A small zipped corpus registered as `toyzip`, served at /toy.zip; returns (spec, zip)."""
    data = _zip({"toy.txt": TOY_TEXT})
    spec = CorpusSpec(name="toyzip", url=server.serve("/toy.zip", data), filename="toy.txt",
                      size=len(TOY_TEXT), sha256=_sha(TOY_TEXT), description="toy",
                      license="none", source="here", member="toy.txt",
                      archive_size=len(data), archive_sha256=_sha(data))
    monkeypatch.setitem(corpora.CORPORA, "toyzip", spec)
    monkeypatch.delenv(spec.url_env, raising=False)
    return spec, data


# ------------------------------------------------------------------ the CLI, end to end

def test_get_downloads_verifies_then_does_nothing_the_second_time(server, shakespeare_bytes,
                                                                  tmp_path):
    env = {"CHARRNN_URL_TINYSHAKESPEARE": server.serve("/input.txt", shakespeare_bytes),
           **NO_PROXY}
    proc = run_cli("data", "get", "tinyshakespeare", "--to", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    written = tmp_path / "tinyshakespeare.txt"
    assert written.stat().st_size == 1_115_394
    assert _sha(written.read_bytes()) == corpora.CORPORA["tinyshakespeare"].sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt"]  # no temp left
    assert "wrote" in proc.stderr and server.hits == ["/input.txt"]

    again = run_cli("data", "get", "tinyshakespeare", "--to", str(tmp_path), env=env)
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stderr and "nothing to do" in again.stderr
    assert server.hits == ["/input.txt"]  # not downloaded again


def test_truncated_download_is_one_error_and_leaves_no_file(server, shakespeare_bytes,
                                                           tmp_path):
    env = {"CHARRNN_URL_TINYSHAKESPEARE": server.serve("/short.txt", shakespeare_bytes[:5000]),
           **NO_PROXY}
    target = tmp_path / "corpora"
    proc = run_cli("data", "get", "tinyshakespeare", "--to", str(target), env=env)
    assert proc.returncode == 1  # a failed download (README, exit codes)
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "5,000 bytes, expected 1,115,394" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not target.exists() or not any(target.iterdir())


def test_http_error_is_reported(server, tmp_path):
    env = {"CHARRNN_URL_TINYSHAKESPEARE": server.url("/missing.txt"), **NO_PROXY}
    proc = run_cli("data", "get", "tinyshakespeare", "--to", str(tmp_path), env=env)
    assert proc.returncode == 1
    assert len(_error_lines(proc.stderr)) == 1 and "HTTP 404" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_unknown_corpus_is_bad_input_listing_the_known_names(tmp_path):
    proc = run_cli("data", "get", "shakespear", "--to", str(tmp_path))
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert all(name in line for name in ("tinyshakespeare", "enwik8", "text8"))
    assert "did you mean tinyshakespeare" in line


def test_list_json_parses_and_shows_what_is_downloaded(tmp_path):
    (tmp_path / "tinyshakespeare.txt").write_bytes(b"x" * 10)  # wrong size: incomplete
    proc = run_cli("data", "list", "--json", "--to", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert {"tinyshakespeare", "enwik8", "text8"} <= set(rows)
    assert rows["enwik8"]["size"] == rows["text8"]["size"] == 100_000_000
    assert rows["enwik8"]["status"] == "missing" and not rows["enwik8"]["downloaded"]
    assert rows["tinyshakespeare"]["status"] == "incomplete"
    assert all(row["license"] and row["source"] for row in rows.values())

    plain = run_cli("data", "list", "--to", str(tmp_path))
    assert plain.returncode == 0 and "text8" in plain.stdout and "licence" in plain.stdout


def test_a_config_naming_a_missing_corpus_says_how_to_get_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {corpus: tinyshakespeare}\nmodel: {hidden_size: 8, num_layers: 1}\n"
                   "train: {max_steps: 1}\n")
    proc = run_cli("train", str(cfg), "--out", str(tmp_path / "run"), cwd=tmp_path,
                   env={"CHARRNN_DATA_DIR": str(tmp_path / "none")})
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert "charrnn data get tinyshakespeare" in line


def test_the_library_does_not_import_torch():
    code = "import sys, charrnn.text.corpora, charrnn.cli.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------ fetch, in process

def test_dropped_connection_is_detected_and_cleaned_up(server, shakespeare_bytes, tmp_path,
                                                      monkeypatch):
    url = server.serve("/cut.txt", shakespeare_bytes[:200_000], length=len(shakespeare_bytes))
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", url)
    with pytest.raises(FetchError, match="incomplete: got 200,000 of 1,115,394"):
        fetch("tinyshakespeare", tmp_path)
    assert not any(tmp_path.iterdir())


def test_corrupt_download_of_the_right_size_fails_on_sha256(server, shakespeare_bytes,
                                                            tmp_path, monkeypatch):
    bad = bytearray(shakespeare_bytes)
    bad[1000] ^= 1
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", server.serve("/bad.txt", bytes(bad)))
    with pytest.raises(FetchError, match="sha256"):
        fetch("tinyshakespeare", tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_failed_fetch_keeps_the_copy_already_there(server, shakespeare_bytes, tmp_path,
                                                     monkeypatch):
    dest = tmp_path / "tinyshakespeare.txt"
    dest.write_bytes(shakespeare_bytes)
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", server.serve("/s", b"oops"))
    with pytest.raises(FetchError):
        fetch("tinyshakespeare", tmp_path, force=True)
    assert dest.read_bytes() == shakespeare_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["tinyshakespeare.txt"]


def test_an_invalid_copy_is_replaced_and_progress_is_reported(server, shakespeare_bytes,
                                                              tmp_path, monkeypatch):
    dest = tmp_path / "tinyshakespeare.txt"
    dest.write_bytes(shakespeare_bytes[:-10])
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", server.serve("/s", shakespeare_bytes))
    events = []
    result = fetch("tinyshakespeare", tmp_path,
                   on_progress=lambda stage, done, total: events.append((stage, done, total)))
    assert result.downloaded and "1,115,384 bytes" in result.replaced
    assert dest.read_bytes() == shakespeare_bytes
    downloads = [e for e in events if e[0] == "download"]
    assert downloads[0] == ("download", 0, 1_115_394)
    assert downloads[-1] == ("download", 1_115_394, 1_115_394)


def test_data_dir_comes_from_the_environment(server, shakespeare_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("CHARRNN_URL_TINYSHAKESPEARE", server.serve("/s", shakespeare_bytes))
    result = fetch("tinyshakespeare")
    assert result.path == tmp_path / "store" / "tinyshakespeare.txt"
    assert corpus_path("tinyshakespeare") == result.path


def test_zip_corpus_is_unpacked_and_verified(toy_zip, tmp_path):
    spec, _ = toy_zip
    result = fetch("toyzip", tmp_path)
    assert result.downloaded and result.sha256_checked
    assert (tmp_path / "toy.txt").read_bytes() == TOY_TEXT
    assert [p.name for p in tmp_path.iterdir()] == ["toy.txt"]  # the archive is gone
    assert not fetch("toyzip", tmp_path).downloaded


def test_downloads_are_written_through_the_atomic_write_helper(toy_zip, server, tmp_path,
                                                               monkeypatch, renames):
    result = fetch("toyzip", tmp_path / "zipped")
    assert_written_atomically(renames, result.path)
    plain = replace(toy_zip[0], name="toyplain", url=server.serve("/toy.txt", TOY_TEXT),
                    member=None, archive_size=None)
    monkeypatch.setitem(corpora.CORPORA, "toyplain", plain)
    result = fetch("toyplain", tmp_path / "plain")
    assert result.path.read_bytes() == TOY_TEXT
    assert_written_atomically(renames, result.path)
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["toy.txt"]


def test_zip_with_a_corrupt_member_is_rejected(toy_zip, server, tmp_path, monkeypatch):
    spec, _ = toy_zip
    data = bytearray(_zip({"toy.txt": TOY_TEXT}, zipfile.ZIP_STORED))
    at = bytes(data).index(b"quick brown")
    data[at] ^= 0x20  # same size, bad CRC
    server.serve("/toy.zip", bytes(data))
    monkeypatch.setitem(corpora.CORPORA, "toyzip", replace(spec, archive_size=len(data),
                                                          archive_sha256=_sha(bytes(data))))
    with pytest.raises(FetchError, match="not a valid zip archive"):
        fetch("toyzip", tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("body, message", [
    (b"PK\x03\x04 this is not really a zip file", "not a valid zip archive"),
    (_zip({"other.txt": TOY_TEXT}), "has no member 'toy.txt'"),
    (_zip({"toy.txt": TOY_TEXT[:-1]}), "expected 22,000"),
])
def test_bad_archives_are_rejected(toy_zip, server, tmp_path, monkeypatch, body, message):
    spec, _ = toy_zip
    server.serve("/toy.zip", body)
    monkeypatch.setitem(corpora.CORPORA, "toyzip", replace(spec, archive_size=None,
                                                          archive_sha256=_sha(body)))
    with pytest.raises(FetchError, match=message):
        fetch("toyzip", tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_zip_of_the_right_size_with_other_bytes_fails_on_the_archive_sha256(
        toy_zip, server, tmp_path, monkeypatch):
    spec, _ = toy_zip
    pinned = _zip({"toy.txt": TOY_TEXT}, zipfile.ZIP_STORED)
    other = _zip({"toy.txt": TOY_TEXT.replace(b"fox", b"cat")}, zipfile.ZIP_STORED)
    assert len(other) == len(pinned)  # a valid zip, the same size: only its sha256 tells
    server.serve("/toy.zip", other)
    monkeypatch.setitem(corpora.CORPORA, "toyzip", replace(
        spec, sha256=None, archive_size=len(pinned), archive_sha256=_sha(pinned)))
    with pytest.raises(FetchError, match=f"is corrupt: its sha256 is {_sha(other)}, expected "
                                         f"{_sha(pinned)}"):
        fetch("toyzip", tmp_path)
    assert not any(tmp_path.iterdir())


def test_truncated_zip_fails_on_its_size(toy_zip, server, tmp_path):
    _, data = toy_zip
    server.serve("/toy.zip", data[:-100])
    with pytest.raises(FetchError, match=f"{len(data) - 100:,} bytes, expected {len(data):,}"):
        fetch("toyzip", tmp_path)
    assert not any(tmp_path.iterdir())


def test_list_corpora_reports_status(toy_zip, tmp_path):
    (tmp_path / "toy.txt").write_bytes(TOY_TEXT)
    rows = {row["name"]: row for row in list_corpora(tmp_path)}
    assert rows["toyzip"]["downloaded"] and rows["toyzip"]["status"] == "downloaded"
    assert rows["text8"]["status"] == "missing"


# ------------------------------------------------------------------ corpus_path

@pytest.mark.parametrize("name", ["tinyshakespeare", "enwik8", "text8"])
def test_every_known_corpus_is_pinned_by_sha256(name):
    spec = corpora.CORPORA[name]
    digests = [spec.sha256] + ([spec.archive_sha256] if spec.member else [])
    for digest in digests:
        assert re.fullmatch("[0-9a-f]{64}", digest or ""), spec  # as hexdigest() writes it


def test_corpus_path_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="known corpora are enwik8, text8, tinyshakespeare"):
        corpus_path("wikitext")


def test_corpus_path_missing_or_incomplete_says_which_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="run `charrnn data get enwik8`"):
        corpus_path("enwik8")
    (tmp_path / "enwik8").write_bytes(b"<mediawiki")
    with pytest.raises(DataError, match="incomplete.*`charrnn data get enwik8`"):
        corpus_path("enwik8")


def test_corpus_path_default_folder_is_the_same_from_any_folder(tmp_path, monkeypatch,
                                                                toy_zip):
    monkeypatch.delenv("CHARRNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    folder = tmp_path / "share" / "charrnn" / "corpora"
    folder.mkdir(parents=True)
    (folder / "toy.txt").write_bytes(TOY_TEXT)
    for cwd in (tmp_path, folder):
        monkeypatch.chdir(cwd)
        assert corpus_path("toyzip") == folder / "toy.txt"
