"""Memory that must not grow with a text: a training run on a large non-ASCII corpus, and the
evaluation's logits with a large vocab."""

import sys

import pytest
import torch

from charrnn.analysis import evaluate
from charrnn.config import ModelConfig
from charrnn.models import build_model
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import corpus_memory  # noqa: E402


def _model(vocab: int):
    torch.manual_seed(0)
    return build_model(ModelConfig(type="lstm", embedding_dim=8, hidden_size=16, num_layers=1),
                       vocab).eval()


@pytest.fixture
def one_thread():
    """Small ops: one thread runs them as fast, and never waits for a busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_evaluation_holds_a_bounded_number_of_logits_and_gives_the_same_loss(monkeypatch, one_thread):
    """16 streams x 256 steps x 3,000 characters would be 12 M logits (49 MB) at once."""
    model, vocab = _model(3000), 3000
    ids = torch.randint(vocab, (16 * 1024 + 77,), generator=torch.Generator().manual_seed(1))
    seen = []
    model.head.register_forward_hook(lambda m, args, out: seen.append(out.numel()))
    loss, count = evaluate.validation_loss(model, ids, torch.device("cpu"), max_windows=2)
    assert count == 2 * 16 * 256 and max(seen) <= evaluate.LOGITS_AT_ONCE, max(seen)
    monkeypatch.setattr(evaluate, "LOGITS_AT_ONCE", 1 << 40)  # whole windows at once
    seen.clear()
    whole, _ = evaluate.validation_loss(model, ids, torch.device("cpu"), max_windows=2)
    assert max(seen) == 16 * 256 * vocab and loss == pytest.approx(whole, rel=1e-6)
    full, n = evaluate.validation_loss(model, ids, torch.device("cpu"))  # with the padding
    monkeypatch.setattr(evaluate, "LOGITS_AT_ONCE", 1 << 20)
    assert evaluate.validation_loss(model, ids, torch.device("cpu")) == (
        pytest.approx(full, rel=1e-6), n) and n == len(ids) - 1


@pytest.mark.slow
def test_training_on_a_large_non_ascii_text_takes_at_most_3_bytes_per_character(tmp_path):
    """benchmarks/corpus_memory.py scaled down from 20 M characters to 3 M (9 MB of UTF-8,
    a 5,050-character vocab, 2-byte ids): peak RSS of `charrnn train` for one step, less that
    of the same command on 20,000 characters, per character (the ids alone take 2)."""
    result = corpus_memory.measure(3_000_000, 20_000, tmp_path, which=("train",))
    per_char = result["rows"]["train"]["bytes_per_char"]
    assert per_char <= corpus_memory.TARGET, result


def _peak_rss_during(fn):
    """(fn's result, growth of the peak RSS while it ran): the peak is reset first."""
    def status(key):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pytest.skip("the peak RSS cannot be reset here (/proc/self/clear_refs)")
    before = status("VmRSS")
    result = fn()
    return result, status("VmHWM") - before


def test_fine_tuning_re_encodes_a_corpus_without_int64_copies(one_thread):
    """Re-encoding to a merged vocab takes the new ids (1 byte each here), not 8-byte copies."""
    from charrnn.text.data import Corpus, split
    from charrnn.text.data import encode_to
    from charrnn.text.vocab import Vocab
    n = 20_000_000
    old = Vocab(list("abcdefgh"))
    ids = torch.randint(len(old), (n,), dtype=torch.uint8)
    corpus = Corpus(old, ids, *split(ids, 0.1), "t")
    merged = Vocab(list("0abcdefghz"))
    widened, grew = _peak_rss_during(lambda: encode_to(corpus, merged, 0.1))
    assert widened.ids.dtype == torch.uint8 and torch.equal(widened.ids[:1000], ids[:1000] + 1)
    assert len(widened.val) == n // 10
    assert grew < 2 * n, f"{grew / n:.1f} bytes per character"
