"""The corpus cache: a changed file never reuses an old entry; the cache is bounded, listed and
cleared (`charrnn data cache`)."""

import json
import os
import shutil
import time

import pytest

from charrnn.text import cache
from charrnn.text.data import load_corpus
from conftest import run_cli

MB = 1_000_000
TICK = 0.05  # longer than a tick of the file-system clock


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(folder))
    monkeypatch.delenv(cache.MAX_MB_ENV, raising=False)
    return folder


def _text(letter: str, size: int = 1_100_000) -> str:
    line = f"{letter * 20} the quick brown fox\n"
    return (line * (size // len(line) + 1))[:size]


def _write(path, text: str):
    path.write_text(text)
    time.sleep(TICK)  # the entry is written in a later tick than the file
    return path


def _replace_in_place(path, text):  # cp -p onto an existing file: same inode, mtime restored
    st = path.stat()
    with open(path, "w") as fh:
        fh.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_by_rename(path, text):  # rsync -t: a new file renamed over the old one
    st = path.stat()
    tmp = path.with_name("new.tmp")
    tmp.write_text(text)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


@pytest.mark.parametrize("replace", [_replace_in_place, _replace_by_rename])
def test_a_file_replaced_with_its_size_and_mtime_kept_is_encoded_again(tmp_path, cache_folder,
                                                                       replace):
    path = _write(tmp_path / "t.txt", _text("a"))
    load_corpus(str(path))
    assert load_corpus(str(path)).cached
    replace(path, _text("b"))
    assert path.stat().st_size == len(_text("a"))
    time.sleep(TICK)
    corpus = load_corpus(str(path), val_fraction=0.0)
    assert not corpus.cached
    assert corpus.vocab.decode(corpus.ids[:20]) == "b" * 20


def test_an_entry_written_in_the_tick_its_file_changed_is_not_trusted(tmp_path, cache_folder):
    """Within one tick of the clock, a change keeps the ctime: such an entry is read again."""
    path = _write(tmp_path / "t.txt", _text("a"))
    load_corpus(str(path))
    slot = cache.Slot(path, "strict")
    ctime = path.stat().st_ctime_ns
    os.utime(slot.meta_path, ns=(ctime, ctime))  # as if written in the file's last tick
    assert not load_corpus(str(path)).cached
    assert load_corpus(str(path)).cached  # the entry written again, later, is used


def _entries(cli):
    code, out, err = cli("data", "cache", "--json")
    assert code == 0, err
    return json.loads(out)


def test_the_least_recently_used_entry_makes_room(tmp_path, cache_folder, monkeypatch, cli):
    monkeypatch.setenv(cache.MAX_MB_ENV, "2.5")  # two entries of 1.1 MB, not three
    a, b, c = (_write(tmp_path / f"{x}.txt", _text(x)) for x in "abc")
    for path in (a, b):
        load_corpus(str(path))
    time.sleep(TICK)
    assert load_corpus(str(a)).cached  # a used after b: b is the least recently used
    load_corpus(str(c))
    listing = _entries(cli)
    sources = {os.path.basename(e["source"]) for e in listing["entries"]}
    assert sources == {"a.txt", "c.txt"}
    assert listing["bytes"] <= 2.5 * MB and listing["max_bytes"] == 2.5 * MB
    assert not load_corpus(str(b)).cached


def test_an_entry_over_the_bound_is_not_cached_and_0_turns_the_cache_off(tmp_path,
                                                                         cache_folder,
                                                                         monkeypatch):
    path = _write(tmp_path / "t.txt", _text("a"))
    for limit in ("1", "0"):
        monkeypatch.setenv(cache.MAX_MB_ENV, limit)
        load_corpus(str(path))
        assert not load_corpus(str(path)).cached
        assert not cache.list_entries(cache_folder)
    monkeypatch.delenv(cache.MAX_MB_ENV)
    load_corpus(str(path))  # an entry made before the cache was turned off is not used
    monkeypatch.setenv(cache.MAX_MB_ENV, "0")
    assert not load_corpus(str(path)).cached


def test_data_cache_lists_and_clears_entries(tmp_path, cache_folder, cli):
    path = _write(tmp_path / "t.txt", _text("a"))
    load_corpus(str(path))
    proc = run_cli("data", "cache")
    assert proc.returncode == 0, proc.stderr
    assert str(cache_folder) in proc.stdout and str(path.resolve()) in proc.stdout
    assert "1.1 MB" in proc.stdout and "[stale]" not in proc.stdout
    [entry] = _entries(cli)["entries"]
    assert entry["status"] == "current" and entry["chars"] == len(_text("a"))
    _write(path, _text("b"))  # the file changed: its old entry is stale
    assert _entries(cli)["entries"][0]["status"] == "stale"
    code, _, err = cli("data", "cache", "--clear")
    assert code == 0 and "removed 1 cache entry" in err, err
    assert not list(cache_folder.iterdir())
    assert _entries(cli)["entries"] == []


def test_a_bad_cache_bound_is_one_error_line(tmp_path, cache_folder, monkeypatch, cli):
    path = _write(tmp_path / "t.txt", _text("a"))
    monkeypatch.setenv(cache.MAX_MB_ENV, "lots")
    for args in (("data", "cache"), ("train", "configs/tiny.yaml", "--data", str(path),
                                     "--out", str(tmp_path / "run"))):
        code, _, err = cli(*args)
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith(f"error: {cache.MAX_MB_ENV}='lots'"), err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_clear_leaves_a_live_writer_alone(tmp_path, cache_folder):
    cache_folder.mkdir()
    live = cache_folder / f".k.ids.tmp-{os.getpid()}"
    dead = cache_folder / ".k.ids.tmp-999999999"
    orphan = cache_folder / "k2.ids"  # its vocab file never written: an incomplete entry
    for p in (live, dead, orphan):
        p.write_bytes(b"x" * 10)
    assert cache.clear(cache_folder) == (1, 20)
    assert live.exists() and not dead.exists() and not orphan.exists()
    shutil.rmtree(cache_folder)
