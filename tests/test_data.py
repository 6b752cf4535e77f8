"""Vocab, corpus reading and encoding, the cache, and the BPTT batch layout."""

import torch
import pytest

from charrnn.data import (StreamBatcher, eval_windows, load_corpus, load_training_corpus,
                          read_bytes, split)
from charrnn.errors import DataError
from charrnn.config import Config
from charrnn.vocab import Vocab
from conftest import assert_written_atomically


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


def test_folder_reads_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first ")
    (tmp_path / ".hidden").write_text("never")
    corpus = load_corpus(str(tmp_path), val_fraction=0.0)
    assert corpus.vocab.decode(corpus.ids) == "first second"


def test_invalid_utf8_names_file_and_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes("ok café ".encode() + b"\xff rest")
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8.*0xff at byte offset 9"):
        load_corpus(str(tmp_path / "bad.txt"))
    corpus = load_corpus(str(tmp_path / "bad.txt"), errors="replace", val_fraction=0.0)
    assert "\ufffd" in corpus.vocab.chars


def test_empty_and_missing_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="not found"):
        read_bytes(str(tmp_path / "missing.txt"))


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


@pytest.mark.parametrize("length", [5000, 5003, 2])
def test_eval_windows_cover_every_target_once(length):
    ids = torch.arange(length)
    targets = []
    for x, y, valid in eval_windows(ids, streams=4, seq_len=64):
        assert x.shape == y.shape
        targets += (y[valid] if valid is not None else y.flatten()).tolist()
    assert sorted(targets) == list(range(1, length))
