"""Sampling: option checks, top-k / top-p, seeding, batches, and that streaming is lazy."""

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import SamplingError
from charrnn.models import build_model
from charrnn.sampling import _pick, check_options, generate
from charrnn.vocab import Vocab

VOCAB = Vocab(list("abcdefgh \n"))
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(type="lstm", embedding_dim=8, hidden_size=16, num_layers=2),
                       len(VOCAB))


def text(model, primes, length=50, **kw):
    steps = list(generate(model, VOCAB, primes, length, device=CPU, **kw))
    return ["".join(col) for col in zip(*steps)]


@pytest.mark.parametrize("args, message", [
    ((-1, 1.0, None, None, False), "--length"),
    ((5, 0.0, None, None, False), "--greedy"),
    ((5, 1.0, 0, None, False), "--top-k"),
    ((5, 1.0, None, 1.5, False), "--top-p"),
])
def test_bad_options(args, message):
    with pytest.raises(SamplingError, match=message):
        check_options(*args)
    check_options(5, 0.0, None, None, True)  # greedy needs no temperature


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(_pick(logits, 1.0, 2, None, False, gen).flatten().tolist()) == {0, 1}
    probs = torch.softmax(logits[0], -1)  # 0.64, 0.24, ...: top-p 0.7 keeps the first two
    assert probs[0] < 0.7 < probs[0] + probs[1]
    assert set(_pick(logits, 1.0, None, 0.7, False, gen).flatten().tolist()) == {0, 1}
    assert set(_pick(logits, 1.0, None, 0.5, False, gen).flatten().tolist()) == {0}
    assert _pick(logits, 1.0, None, None, True, gen).eq(0).all()


def test_seeds_greedy_and_batches(model):
    a = text(model, ["ab"], seed=1, temperature=1.0)
    assert a == text(model, ["ab"], seed=1, temperature=1.0)
    assert a != text(model, ["ab"], seed=2, temperature=1.0)
    assert text(model, ["ab"], greedy=True) == text(model, ["ab"], greedy=True, seed=5)
    batch = text(model, ["ab", "ab", "h"], greedy=True)
    assert batch[0] == batch[1] == text(model, ["ab"], greedy=True)[0]
    assert batch[2] == text(model, ["h"], greedy=True)[0]
    assert all(len(t) == 50 for t in batch)


def test_empty_prime_starts_from_a_random_character(model):
    out = text(model, [""], length=10, seed=0)[0]
    assert len(out) == 10 and set(out) <= set(VOCAB.chars)


def test_generation_is_lazy_and_leaves_settings_alone(model):
    steps = generate(model, VOCAB, ["a"], 10**9, device=CPU, seed=0)
    first = [next(steps) for _ in range(5)]  # a billion-character request yields at once
    assert all(len(s) == 1 for s in first)
    assert torch.backends.mkldnn.enabled  # oneDNN is switched off only inside each block
    assert not torch.is_inference_mode_enabled()
    steps.close()
