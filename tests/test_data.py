"""Vocab, corpus reading and encoding, the cache, and the BPTT batch layout."""

import random
import subprocess
import sys
import textwrap
import time

import torch
import pytest

from charrnn.text import source as textsource
from charrnn.text.data import (StreamBatcher, eval_windows, load_corpus, load_training_corpus,
                          read_text, split)
from charrnn.errors import DataError
from charrnn.config import Config
from charrnn.text.vocab import Vocab
from conftest import ROOT, assert_written_atomically


def test_vocab_round_trip_and_order():
    text = "hello, wörld ✓"
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == torch.uint8 and len(ids) == len(text)
    assert vocab.decode(ids) == text


def test_vocab_dtype_grows_with_size():
    big = "".join(chr(0x4E00 + i) for i in range(300))
    vocab = Vocab.from_text(big)
    assert vocab.dtype == torch.int16
    assert vocab.decode(vocab.encode(big)) == big


def test_unknown_characters_are_named():
    with pytest.raises(DataError, match="'z'"):
        Vocab.from_text("abc").encode("abz")


def test_ascii_and_unicode_corpora_load_to_the_same_ids(tmp_path):
    ascii_text = "sharks feed on tuna.\n" * 10
    (tmp_path / "a.txt").write_text(ascii_text)
    corpus = load_corpus(str(tmp_path / "a.txt"), val_fraction=0.0)
    assert corpus.vocab == Vocab.from_text(ascii_text)
    assert torch.equal(corpus.ids, corpus.vocab.encode(ascii_text))
    uni = "thé café\n" * 10
    (tmp_path / "u.txt").write_text(uni, encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "u.txt"), val_fraction=0.0)
    assert corpus.vocab.decode(corpus.ids) == uni


def test_folder_reads_files_in_sorted_order_each_ending_a_line(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first ")
    (tmp_path / "c.txt").write_text("third\n")  # already ends a line: nothing added
    (tmp_path / ".hidden").write_text("never")
    corpus = load_corpus(str(tmp_path), val_fraction=0.0)
    assert corpus.vocab.decode(corpus.ids) == "first \nsecond\nthird\n"
    assert read_text(str(tmp_path)) == "first \nsecond\nthird\n"


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    bom = "\ufeff".encode()
    (tmp_path / "one.txt").write_bytes(bom + b"hello \xef\xbb\xbf inside")
    corpus = load_corpus(str(tmp_path / "one.txt"), val_fraction=0.0)
    assert corpus.vocab.decode(corpus.ids) == "hello \ufeff inside"  # only the leading one
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(bom + "café\n".encode())
    (tmp_path / "d" / "b.txt").write_bytes(bom + b"tea\n")
    assert load_corpus(str(tmp_path / "d"), val_fraction=0.0).vocab.chars == sorted(set("café\ntea"))
    assert read_text(str(tmp_path / "d")) == "café\ntea\n"


def test_glob_patterns_take_the_matching_files(tmp_path, monkeypatch):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("import os\n")
    (tmp_path / "src" / "pkg" / "b.py").write_text("x = 1")
    (tmp_path / "src" / "pkg" / "lib.so").write_bytes(b"\x7fELF\xff\xfe")  # not UTF-8
    (tmp_path / "src" / ".hidden.py").write_text("never")
    monkeypatch.chdir(tmp_path)
    corpus = load_corpus("src/**/*.py", val_fraction=0.0)
    assert corpus.vocab.decode(corpus.ids) == "import os\nx = 1\n"
    with pytest.raises(DataError, match=r"pattern 'src/\*\*/\*\.txt' matches no files"):
        load_corpus("src/**/*.txt")


def test_a_pattern_given_with_data(tmp_path, monkeypatch, capsys):
    from charrnn.cli.app import main
    from charrnn.config import load_config
    (tmp_path / "books").mkdir()
    for name in "abc":
        (tmp_path / "books" / f"{name}.txt").write_text(f"book {name}\n" * 40)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.path=books/*.txt"])
    assert load_training_corpus(cfg).vocab.chars == sorted(set("book abc\n"))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(ROOT / "configs" / "tiny.yaml"), "--data", "nope/*.txt"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "nope/*.txt' matches no files" in err


def test_invalid_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes("ok café ".encode() + b"\xff rest")
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8.*0xff at byte offset 9"):
        load_corpus(str(tmp_path / "bad.txt"))
    corpus = load_corpus(str(tmp_path / "bad.txt"), errors="replace", val_fraction=0.0)
    assert "\ufffd" in corpus.vocab.chars


@pytest.mark.parametrize("at", [0, 3, 5, 8, 16, 19])  # character boundaries
def test_decode_errors_name_the_file_and_offset_across_blocks(tmp_path, monkeypatch, at):
    monkeypatch.setattr(textsource, "BLOCK", 7)  # characters and errors straddle blocks
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("fine ✓\n")
    good = "\ufeffé✓abcdefgh✓ijk✓".encode()
    (tmp_path / "d" / "b.txt").write_bytes(good[:at] + b"\xfe" + good[at:])
    with pytest.raises(DataError, match=rf"b.txt is not UTF-8.*0xfe at byte offset {at}\b"):
        load_corpus(str(tmp_path / "d"))
    (tmp_path / "d" / "b.txt").write_bytes(good[:-1])  # a character cut off at the end
    with pytest.raises(DataError, match=rf"b.txt is not UTF-8.*at byte offset {len(good) - 3}"):
        load_corpus(str(tmp_path / "d"))


def test_chunked_encoding_equals_whole_text_encoding(tmp_path, monkeypatch):
    monkeypatch.setattr(textsource, "BLOCK", 1000)
    rng = random.Random(0)
    alphabet = "abc \n" + "".join(chr(0x4E00 + i) for i in range(400)) + "é😀"
    text = "".join(rng.choice(alphabet) for _ in range(20_000)) + "plain ascii " * 300
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "t.txt"), val_fraction=0.0)
    assert corpus.vocab == Vocab.from_text(text) and corpus.ids.dtype == torch.int16
    assert torch.equal(corpus.ids, corpus.vocab.encode(text))


def test_non_ascii_corpus_loads_in_at_most_3_bytes_per_character(tmp_path):
    """20 M characters, a 5,000-character vocab: ids take 2 bytes each, the rest stays small."""
    child = textwrap.dedent('''
        import sys, torch
        from charrnn.text.data import load_corpus
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        rng = torch.Generator().manual_seed(0)
        chars = [chr(0x4E00 + i) for i in range(4900)] + list("abcdefghij klmnopqrstuvwxyz,.\\n")
        ids = torch.randint(len(chars), (1_000_000,), generator=rng).tolist()
        block = "".join(chars[i] for i in ids)
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            for _ in range(20):
                fh.write(block)
        del block, ids
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = status("VmRSS")
        corpus = load_corpus(sys.argv[1], use_cache=False)
        print((status("VmHWM") - before) / len(corpus.ids), len(corpus.vocab))
    ''')
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path / "big.txt")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    per_char, vocab_size = proc.stdout.split()
    assert int(vocab_size) > 4900 and float(per_char) <= 3.0, proc.stdout


def test_empty_and_missing_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "bom.txt").write_bytes("\ufeff".encode())
    with pytest.raises(DataError, match="empty"):
        load_corpus(str(tmp_path / "bom.txt"))
    with pytest.raises(DataError, match="not found"):
        load_corpus(str(tmp_path / "missing.txt"))


def test_split_takes_the_last_fraction():
    ids = torch.arange(100)
    train, val = split(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_load_training_corpus_reads_the_configured_text(tmp_path):
    (tmp_path / "t.txt").write_text("abcdefghij" * 10)
    cfg = Config()
    cfg.data.path, cfg.data.val_fraction = str(tmp_path / "t.txt"), 0.2
    corpus = load_training_corpus(cfg)
    assert len(corpus.train) == 80 and len(corpus.val) == 20
    cfg.data.path = None
    with pytest.raises(DataError, match="no training text"):
        load_training_corpus(cfg)


def test_large_files_are_cached_and_memory_mapped(tmp_path, monkeypatch, renames):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    text = ("the quick brown fox jumps over the lazy dog\n" * 30000)
    (tmp_path / "big.txt").write_text(text)
    time.sleep(0.05)  # an entry written in the tick its file changed is not trusted (cache.py)
    first = load_corpus(str(tmp_path / "big.txt"), val_fraction=0.1)
    second = load_corpus(str(tmp_path / "big.txt"), val_fraction=0.1)
    assert not first.cached and second.cached
    written = {dst.suffix for _, dst in renames}
    assert written == {".ids", ".json"}
    for _, dst in renames:
        assert_written_atomically(renames, dst)
    assert second.vocab == first.vocab and torch.equal(second.ids, first.ids)
    (tmp_path / "big.txt").write_text(text + "changed")  # a changed file is read again
    third = load_corpus(str(tmp_path / "big.txt"), val_fraction=0.1)
    assert not third.cached and third.vocab.decode(third.ids[-7:]) == "changed"


def test_stream_batcher_layout():
    ids = torch.arange(2 * 3 * 4 + 1)  # 25 ids: 2 streams of 12, windows of 4
    b = StreamBatcher(ids, batch_size=2, seq_len=4)
    assert b.windows_per_pass == 3
    x, y, reset = b.batch(0)
    assert reset and x.tolist() == [[0, 1, 2, 3], [12, 13, 14, 15]]
    x, _, reset = b.batch(1)
    assert not reset and x.tolist() == [[4, 5, 6, 7], [16, 17, 18, 19]]
    x, _, reset = b.batch(3)  # a new pass starts again at window 0
    assert reset and b.position(3) == (1, 0) and x[0, 0].item() == 0


@pytest.mark.parametrize("length,batch,seq", [(25, 2, 4), (1000, 7, 13), (64, 3, 5)])
def test_stream_batcher_targets_are_the_inputs_shifted_by_one(length, batch, seq):
    """Every stream reads the text contiguously, and each target is the next character."""
    ids = torch.randperm(length)  # distinct ids: each position is identifiable
    b = StreamBatcher(ids, batch_size=batch, seq_len=seq)
    xs, ys = zip(*(b.batch(step)[:2] for step in range(b.windows_per_pass)))
    x, y = torch.cat(xs, dim=1), torch.cat(ys, dim=1)  # (batch, windows * seq)
    assert x.dtype == y.dtype == torch.int64
    per_stream = (length - 1) // batch
    for s in range(batch):
        start = s * per_stream
        assert torch.equal(x[s], ids[start:start + x.size(1)])
        assert torch.equal(y[s], ids[start + 1:start + 1 + x.size(1)])


def test_too_short_text_says_how_much_is_needed():
    with pytest.raises(DataError, match=r"needs batch_size x seq_len \+ 1 = 41"):
        StreamBatcher(torch.arange(30), batch_size=4, seq_len=10)


def test_a_text_too_short_for_one_window_gives_that_limit_first(tmp_path, cli):
    short = tmp_path / "short.txt"
    short.write_text("sharks eat")  # 10 characters: a validation split of 1, and no window
    cfg = Config()
    cfg.data.path, cfg.train.batch_size, cfg.train.seq_len = str(short), 4, 10
    with pytest.raises(DataError) as err:
        load_training_corpus(cfg)
    assert str(err.value).startswith(f"{short} has 10 characters, but one training window "
                                     f"needs batch_size x seq_len + 1 = 41"), err.value
    assert "val_fraction" not in str(err.value)  # no val_fraction makes it long enough
    code, _, err = cli("train", ROOT / "configs" / "tiny.yaml", "--data", short, "--out",
                       tmp_path / "run")
    assert code == 2 and err.count("\n") == 1, err
    assert "one training window needs batch_size x seq_len + 1 = 513" in err
    assert "val_fraction" not in err
    # a text long enough for a window but not for a validation split: that is its error
    cfg.data.val_fraction = 0.01
    short.write_text("sharks eat tuna. " * 3)
    with pytest.raises(DataError, match="validation split .* is only 0 character"):
        load_training_corpus(cfg)


@pytest.mark.parametrize("length", [5000, 5003, 2])
def test_eval_windows_cover_every_target_once(length):
    ids = torch.arange(length)
    targets = []
    for x, y, valid in eval_windows(ids, streams=4, seq_len=64):
        assert x.shape == y.shape
        targets += (y[valid] if valid is not None else y.flatten()).tolist()
    assert sorted(targets) == list(range(1, length))


@pytest.mark.parametrize("wide", [False, True])
def test_vocab_encode_of_a_long_text_makes_no_copy_of_it(wide):
    """Encoding works piece by piece into the ids: no whole-text string, bytes or list."""
    import tracemalloc
    alphabet = "abc \n" + ("".join(chr(0x4E00 + i) for i in range(400)) if wide else "xyz")
    vocab = Vocab.from_text(alphabet)
    text = alphabet * (1_000_000 // len(alphabet))
    tracemalloc.start()
    try:
        ids = vocab.encode(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == len(text) and ids.dtype == vocab.dtype
    assert vocab.decode(ids[-len(alphabet):]) == alphabet
    # a piece's code points, as bytes and as a buffer: 2 x 4 x ENCODE_CHUNK bytes (512 KB)
    assert peak < 800_000, f"{peak:,} bytes of Python objects for {len(text):,} chars"
