"""Sampling: option checks, top-k / top-p, seeding, batches, and that streaming is lazy."""

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import SamplingError
from charrnn.models import build_model
from charrnn.generation.sampling import check_options, generate, pick_next
from charrnn.text.vocab import Vocab

VOCAB = Vocab(list("abcdefgh \n"))
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(type="lstm", embedding_dim=8, hidden_size=16, num_layers=2),
                       len(VOCAB)).eval()


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
    assert set(pick_next(logits, 1.0, 2, None, False, gen).flatten().tolist()) == {0, 1}
    probs = torch.softmax(logits[0], -1)  # 0.64, 0.24, ...: top-p 0.7 keeps the first two
    assert probs[0] < 0.7 < probs[0] + probs[1]
    assert set(pick_next(logits, 1.0, None, 0.7, False, gen).flatten().tolist()) == {0, 1}
    assert set(pick_next(logits, 1.0, None, 0.5, False, gen).flatten().tolist()) == {0}
    assert pick_next(logits, 1.0, None, None, True, gen).eq(0).all()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_draws_follow_the_softmax_of_the_tempered_logits(device):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]], device=device).repeat(100_000, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    for temperature, top_k in ((1.0, None), (0.5, None), (1.0, 3)):
        drawn = pick_next(logits, temperature, top_k, None, False, gen).flatten().cpu()
        counts = torch.bincount(drawn, minlength=5).double()
        tempered = logits[0].cpu() / temperature
        if top_k:
            tempered[top_k:] = float("-inf")
        want = torch.softmax(tempered.double(), -1) * len(drawn)
        # within 5 standard deviations of a multinomial count, for every character
        assert ((counts - want).abs() <= 5 * (want * (1 - want / len(drawn))).sqrt() + 1).all(), \
            (temperature, top_k, counts, want)


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


def test_length_counts_the_characters_after_the_prime(model):
    assert list(generate(model, VOCAB, [""], 0, device=CPU, seed=0)) == []
    assert list(generate(model, VOCAB, ["", "ab"], 0, device=CPU, seed=0)) == []
    mixed = text(model, ["", "ab", ""], length=7, seed=3)
    assert [len(t) for t in mixed] == [7, 7, 7]
    # the primed sample is not changed by empty ones beside it
    assert text(model, ["", "ab"], length=20, greedy=True)[1] == text(model, ["ab"], length=20,
                                                                      greedy=True)[0]


def test_a_tiny_temperature_is_greedy(model):
    logits = torch.tensor([[1.0, 3.0, 2.0], [50.0, -50.0, 49.0]])
    gen = torch.Generator().manual_seed(0)
    for t in (1e-9, 1e-30, 1e-50, 5e-324):
        assert pick_next(logits, t, None, None, False, gen).flatten().tolist() == [1, 0]
    greedy = text(model, ["ab", "h"], greedy=True)
    assert text(model, ["ab", "h"], temperature=1e-9, seed=1) == greedy
    assert text(model, ["ab", "h"], temperature=1e-50, top_k=3, top_p=0.5, seed=1) == greedy


def test_stop_texts_end_each_sample_on_its_own(model):
    kw = dict(length=60, seed=5, temperature=1.0)
    full = text(model, ["ab", "h", "c"], **kw)
    stop = full[0][20:23]
    assert full[0].find(stop) >= 5
    got = text(model, ["ab", "h", "c"], stop=["zz", stop], **kw)
    for whole, cut in zip(full, got):
        end = whole.find(stop)
        assert cut == (whole if end < 0 else whole[:end + len(stop)])
    assert got[0].endswith(stop) and len(got[0]) <= 23 and got[1] != got[0]
    capped = text(model, ["ab", "h", "c"], stop=[stop], **{**kw, "length": 5})
    assert capped == [t[:5] for t in full]
    steps = list(generate(model, VOCAB, ["ab", "h", "c"], 10**9, device=CPU, stop=["a", "\n"],
                          seed=5, temperature=1.0))  # ends when every sample has stopped
    for t in ("".join(col) for col in zip(*steps)):
        assert t[-1] in "a\n" and not set(t[:-1]) & set("a\n")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("primes, threads", [(["ab", "h", "ab"], 2), (["ab"], 1), (["ab"], 2),
                                             (["ab"], 3)])
def test_lean_step_matches_the_module(cell, primes, threads, monkeypatch):
    """Batches and single samples; one sample's product is split in blocks, one per thread."""
    from charrnn.models import stepper
    from charrnn.generation.sampling import warm_up
    from charrnn.models.stepper import Stepper

    monkeypatch.setattr(stepper, "MIN_BLOCK_ROWS", 1)  # split even this small model's products

    torch.manual_seed(1)
    net = build_model(ModelConfig(type=cell, embedding_dim=8, hidden_size=32, num_layers=3),
                      len(VOCAB)).eval()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            hidden, _ = warm_up(net, VOCAB, primes, CPU)
            lean, plain = Stepper(net, hidden), Stepper(net, hidden, fast=False)
            assert lean.fast and not plain.fast
            batch = len(primes)
            assert lean.steps[0][1].size(0) == (min(threads, 2) if batch == 1 else 1)  # blocks
            ids = torch.randint(len(VOCAB), (batch, 40), generator=torch.Generator().manual_seed(0))
            for k in range(40):
                if k == 20 and batch > 1:  # beam search keeps and repeats some samples
                    order = torch.tensor([2, 0, 0])
                    lean.reorder(order), plain.reorder(order)
                a, b = lean(ids[:, k:k + 1]), plain(ids[:, k:k + 1])
                assert torch.allclose(a, b, atol=1e-5, rtol=0), (k, (a - b).abs().max())
            for x, y in zip(*(s.hidden if cell == "lstm" else (s.hidden,) for s in (lean, plain))):
                assert x.shape == y.shape and torch.allclose(x, y, atol=1e-5, rtol=0)
        assert (text(net, ["ab", "h"], seed=4, fast=True)
                == text(net, ["ab", "h"], seed=4, fast=False))
        assert text(net, ["ab"], seed=4, fast=True) == text(net, ["ab"], seed=4, fast=False)
    finally:
        torch.set_num_threads(saved)


def test_best_beam_never_scores_below_greedy():
    from charrnn.generation.beam import beam_search, log_prob

    for seed in range(4):
        torch.manual_seed(seed)
        net = build_model(ModelConfig(type="gru", embedding_dim=8, hidden_size=16, num_layers=1),
                          len(VOCAB)).eval()
        greedy = text(net, ["ab"], length=12, greedy=True)[0]
        for width in (1, 2, 5):
            found = beam_search(net, VOCAB, "ab", 12, width=width, device=CPU, results=width)
            assert found == beam_search(net, VOCAB, "ab", 12, width=width, device=CPU,
                                        results=width)  # deterministic
            assert len(found) == width and all(len(t) == 12 for t, _ in found)
            assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
            assert found[0][1] >= log_prob(net, VOCAB, "ab", greedy, CPU) - 1e-4
            for t, s in found:  # a beam's score is its text's log-probability
                assert s == pytest.approx(log_prob(net, VOCAB, "ab", t, CPU), abs=1e-3)


def test_beams_end_at_stop_texts_and_the_length_penalty_ranks_them(model):
    from charrnn.generation.beam import beam_search

    plain = beam_search(model, VOCAB, "ab", 30, width=6, device=CPU, results=6, stop=["e", "h"])
    assert all(t[-1] in "eh" and not set(t[:-1]) & set("eh") for t, _ in plain if len(t) < 30)
    assert [s for _, s in plain] == sorted((s for _, s in plain), reverse=True)
    long = beam_search(model, VOCAB, "ab", 30, width=6, device=CPU, results=6, stop=["e", "h"],
                       length_penalty=2.0)
    ranks = [s / len(t) ** 2.0 for t, s in long]
    assert ranks == sorted(ranks, reverse=True)
    assert len(long[0][0]) >= len(plain[0][0])


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    """0.5 / 0.25 / 0.25 with top_p 0.5: the first character alone reaches 0.5."""
    logits = torch.tensor([[0.5, 0.25, 0.25]]).log().repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(pick_next(logits, 1.0, None, 0.5, False, gen).flatten().tolist()) == {0}
    assert set(pick_next(logits, 1.0, None, 0.75, False, gen).flatten().tolist()) == {0, 1}
    assert set(pick_next(logits, 1.0, None, 0.76, False, gen).flatten().tolist()) == {0, 1, 2}
    assert set(pick_next(logits, 1.0, None, 1e-9, False, gen).flatten().tolist()) == {0}


def test_library_calls_leave_the_model_in_the_mode_they_found(model):
    from charrnn.generation.beam import beam_search, log_prob
    from charrnn.analysis.probe import probe_text

    model.train()
    try:
        steps = generate(model, VOCAB, ["ab"], 20, device=CPU, seed=0)
        next(steps)
        assert model.training  # between yields, too
        list(steps)
        assert model.training
        beam_search(model, VOCAB, "ab", 5, width=2, device=CPU)
        assert model.training
        log_prob(model, VOCAB, "ab", "cd", CPU)
        assert model.training
        probe_text(model, VOCAB, "abcd", CPU)
        assert model.training
        model.eval()
        list(generate(model, VOCAB, ["ab"], 5, device=CPU, seed=0))
        assert not model.training
    finally:
        model.eval()


def test_a_prime_read_in_chunks_gives_what_one_piece_gives(model, monkeypatch):
    from charrnn.generation import sampling
    from charrnn.generation.beam import log_prob

    prime = "abcdefgh ab\nhgfedcba " * 3
    whole = text(model, [prime, "ab"], length=30, greedy=True)
    score = log_prob(model, VOCAB, prime, whole[0], CPU)
    monkeypatch.setattr(sampling, "PRIME_CHUNK", 5)  # 63 characters: 13 chunks, the last short
    assert text(model, [prime, "ab"], length=30, greedy=True) == whole
    assert log_prob(model, VOCAB, prime, whole[0], CPU) == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_a_beam_wide_enough_finds_the_exhaustive_best(seed):
    """Over 3 characters and 4 steps there are 81 continuations; a beam of 27 keeps every
    prefix until the last step and then picks from all 81, so its 27 results must be the
    exhaustive search's 27 best, in order, with their scores (a beam that kept the worst
    candidates, or ranked them wrongly, would not be)."""
    import itertools

    from charrnn.generation.beam import beam_search, log_prob

    vocab = Vocab(list("abc"))
    torch.manual_seed(seed)
    net = build_model(ModelConfig(type="lstm", embedding_dim=4, hidden_size=8, num_layers=1),
                      len(vocab)).eval()
    with torch.no_grad():
        net.head.weight.mul_(8)  # a peaked model: the ranking is far from uniform
    every = sorted((("".join(t), log_prob(net, vocab, "ab", "".join(t), CPU))
                    for t in itertools.product("abc", repeat=4)), key=lambda ts: -ts[1])
    found = beam_search(net, vocab, "ab", 4, width=27, device=CPU, results=27)
    assert [t for t, _ in found] == [t for t, _ in every[:27]]
    assert [s for _, s in found] == pytest.approx([s for _, s in every[:27]], abs=1e-4)
    (text, score), = beam_search(net, vocab, "ab", 4, width=27, device=CPU)
    assert text == every[0][0] and score == pytest.approx(every[0][1], abs=1e-4)
