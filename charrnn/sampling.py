"""Generation: feed a prime once, then one character per step with the hidden state carried.

Work per generated character is constant (one recurrent step on a batch of one character per
sample). Several samples or primes run as one batch. Characters are yielded as they are made,
so a caller can stream them.
"""

from __future__ import annotations

from typing import Iterator

import torch

from charrnn.device import fast_step_context
from charrnn.errors import SamplingError
from charrnn.vocab import Vocab


def check_options(length: int, temperature: float, top_k: int | None, top_p: float | None,
                  greedy: bool) -> None:
    """Raise a SamplingError for options that cannot be used, saying what to use instead."""
    if length < 0:
        raise SamplingError(f"--length must be 0 or more, got {length}")
    if not greedy and not temperature > 0:
        raise SamplingError(f"--temperature must be above 0, got {temperature} (for the single "
                            f"likeliest character at each step, use --greedy)")
    if top_k is not None and top_k < 1:
        raise SamplingError(f"--top-k must be 1 or more, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise SamplingError(f"--top-p must be in (0, 1], got {top_p}")


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
          greedy: bool, generator: torch.Generator) -> torch.Tensor:
    """Next ids (B, 1) from logits (B, V)."""
    if greedy:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)


def _select(states: list, index: torch.Tensor):
    """Stack per-prime hidden states (batch dim 1) and pick one per sample."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1).index_select(1, index) for parts in zip(*states))
    return torch.cat(states, dim=1).index_select(1, index)


def _warm_up(model, vocab: Vocab, primes: list[str], device: torch.device):
    """Read each distinct prime once; return (hidden, last logits) for every sample."""
    distinct = list(dict.fromkeys(primes))
    states, last = [], []
    for prime in distinct:
        logits, hidden = model(vocab.encode(prime).long().to(device).unsqueeze(0))
        states.append(hidden)
        last.append(logits[:, -1])
    index = torch.tensor([distinct.index(p) for p in primes], device=device)
    return _select(states, index), torch.cat(last).index_select(0, index)


def generate(model, vocab: Vocab, primes: list[str], length: int, *, device: torch.device,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, seed: int | None = None) -> Iterator[list[str]]:
    """Yield, `length` times, the next character of each sample (one list per step).

    Each distinct prime is read once to warm the hidden state; an empty prime starts from a
    character drawn at random, which is yielded first. Steps run in blocks (1, 2, 4, ... 64)
    under inference mode, with one device-to-host copy per block; the caller's settings are
    untouched between yields.
    """
    check_options(length, temperature, top_k, top_p, greedy)
    for prime in dict.fromkeys(primes):
        vocab.check(prime, f"the prime {prime!r}")
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    model.eval()
    starts = ["" if p else vocab.chars[int(torch.randint(len(vocab), (1,), generator=generator,
                                                          device=device))] for p in primes]
    with torch.inference_mode(), fast_step_context(device):
        hidden, logits = _warm_up(model, vocab, [p or s for p, s in zip(primes, starts)], device)
    if any(starts):  # no context given: the random first characters come first
        yield starts
        length -= 1
    chars, block, done = vocab.chars, 1, 0
    while done < length:
        steps = min(block, length - done)
        with torch.inference_mode(), fast_step_context(device):
            picked = []
            for _ in range(steps):
                nxt = _pick(logits.float(), temperature, top_k, top_p, greedy, generator)
                picked.append(nxt)
                logits, hidden = model(nxt, hidden)
                logits = logits[:, -1]
            rows = torch.cat(picked, dim=1).tolist()  # (samples, steps), one copy per block
        for step in zip(*rows):
            yield [chars[i] for i in step]
        done += steps
        block = min(block * 2, 64)
