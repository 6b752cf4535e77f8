"""Generation: feed a prime once, then one character per step with the hidden state carried.

Work per generated character is constant (one recurrent step on a batch of one character per
sample). Several samples or primes run as one batch. Characters are yielded as they are made,
so a caller can stream them. `length` always counts the characters generated after the prime.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from charrnn.device import check_memory, fast_step_context
from charrnn.errors import SamplingError
from charrnn.models.family import map_hidden
from charrnn.models.stepper import evaluating, one_thread
from charrnn.text.vocab import Vocab

# Below this temperature logits / temperature can leave float32's range (1e-50 is 0 in float32):
# take the argmax, which is what sampling tends to as the temperature goes to 0.
_GREEDY_BELOW = 1e-20
# Characters of a prime read in one call: a long prime is read in pieces with the state
# carried, so its activations never exist for all of it at once.
PRIME_CHUNK = 2048


def check_options(length: int, temperature: float, top_k: int | None, top_p: float | None,
                  greedy: bool) -> None:
    """Raise a SamplingError for options that cannot be used, saying what to use instead."""
    if length < 0:
        raise SamplingError(f"--length must be 0 or more, got {length}")
    if not greedy and not 0 < temperature < math.inf:
        raise SamplingError(f"--temperature must be above 0 and finite, got {temperature} "
                            f"(for the single likeliest character at each step, use --greedy)")
    if top_k is not None and top_k < 1:
        raise SamplingError(f"--top-k must be 1 or more, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise SamplingError(f"--top-p must be in (0, 1], got {top_p}")


def check_batch_fits(model, vocab_size: int, samples: int, kept: int, what: str) -> None:
    """Refuse, before anything is built, a batch whose state and text cannot fit in memory.

    Per sample: what the model's family says one sample's step holds (its state, gates and
    logits: 4-byte floats), and the `kept` characters collected before they are written (0 for
    a streamed sample, or where stop texts may end it early), at 25 bytes each in Python lists
    and strings: `charrnn sample -N 20000 --length 500` on an LSTM 2 x 256 peaked 231 MB above
    `--length 1`, 24 bytes a character. `what` names the options in the error.
    """
    state = 4 * model.estimate_step(model.config, vocab_size)
    text = 100 + 25 * kept
    check_memory(samples * (state + text), torch.device("cpu"), what,
                 "ask for fewer samples or a shorter --length (or end them with --stop)",
                 SamplingError)


def pick_next(logits: torch.Tensor, temperature: float, top_k: int | None,
              top_p: float | None, greedy: bool, generator: torch.Generator) -> torch.Tensor:
    """Next ids (B, 1) from logits (B, V)."""
    if greedy or temperature < _GREEDY_BELOW:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest set reaching top_p: a character is left out once the ones before it
        # reach top_p (to float rounding: 0.5 / 0.25 / 0.25 with top_p 0.5 keeps the first alone)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p * (1 - 1e-6)
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # The exponential race: argmax p_i / E_i over draws E_i ~ Exp(1) is i with probability p_i
    # (one pass over the vocab: this whole function took 13 µs a step here, 31 µs with
    # torch.multinomial, for one sample of 65 characters). The clamp
    # keeps a zero draw (possible on the CPU) from turning a zero probability into a NaN.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div_(noise.clamp_(min=torch.finfo(probs.dtype).tiny)).argmax(-1, keepdim=True)


def _select(states: list, index: torch.Tensor):
    """Stack per-prime hidden states (batch dim 1) and pick one per sample."""
    return map_hidden(lambda *parts: torch.cat(parts, dim=1).index_select(1, index), *states)


def read_chunks(model, ids: torch.Tensor, device: torch.device, hidden=None):
    """Read ids (1-D) from `hidden`, PRIME_CHUNK at a time with the state carried; yield each
    chunk's (logits (n, V) after each of its ids, hidden after it). Memory is that of one
    chunk's activations, whatever the length. Run outside fast_step_context: on the CPU,
    oneDNN reads a sequence about 4x faster than torch's own kernel (50,000 characters
    through the demo LSTM on one thread: 1.0 s against 3.7 s)."""
    for start in range(0, len(ids), PRIME_CHUNK):
        chunk = ids[start:start + PRIME_CHUNK].to(device, torch.long).unsqueeze(0)
        with one_thread(device):
            logits, hidden = model(chunk, hidden)
        yield logits[0], hidden


def read_prime(model, ids: torch.Tensor, device: torch.device, hidden=None):
    """Read ids (1-D, at least one) from `hidden`: (hidden, the logits (1, V) after the last)."""
    for logits, hidden in read_chunks(model, ids, device, hidden):
        pass
    return hidden, logits[-1:]


def warm_up(model, vocab: Vocab, primes: Sequence[str], device: torch.device, hidden=None):
    """Read each distinct prime once; return (hidden, last logits) for every sample.

    An empty prime leaves its sample at the model's initial state with zero logits (the caller
    chooses its first character). `hidden`, if given, is one state (batch 1) to continue from.
    """
    distinct = list(dict.fromkeys(primes))
    states, last = [], []
    for prime in distinct:
        state, logits = read_prime(model, vocab.encode(prime or vocab.chars[0]), device, hidden)
        if not prime:
            state = hidden if hidden is not None else model.initial_state(1, device)
            logits = logits * 0
        states.append(state)
        last.append(logits)
    index = torch.tensor([distinct.index(p) for p in primes], device=device)
    return _select(states, index), torch.cat(last).index_select(0, index)


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class StopWatch:
    """Tracks, per sample, whether its text so far has ended with one of the stop texts."""

    def __init__(self, stops: Sequence[str], samples: int):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=0)
        self.tails = [""] * samples
        self.done = [False] * samples

    def see(self, chars: list[str]) -> list[str]:
        """Record one step; return it with finished samples' characters blanked."""
        if not self.stops:
            return chars
        out = []
        for i, ch in enumerate(chars):
            if self.done[i]:
                out.append("")
                continue
            tail = (self.tails[i] + ch)[-self.keep:]
            self.tails[i] = tail
            self.done[i] = any(tail.endswith(s) for s in self.stops)
            out.append(ch)
        return out


def generate(model, vocab: Vocab, primes: list[str], length: int, *, device: torch.device,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, seed: int | None = None, stop: Sequence[str] = (),
             fast: bool = True) -> Iterator[list[str]]:
    """Yield, at most `length` times, the next character of each sample (one list per step).

    Each distinct prime is read once to warm the hidden state; an empty prime's first
    character is drawn at random. A sample that has produced one of the `stop` texts yields ""
    from then on, and generation ends when every sample has. Steps run in blocks (1, 2, 4, ...
    64) under inference mode and in eval mode, with one device-to-host copy per block; the
    caller's settings (the model's training mode among them) are untouched between yields.
    """
    check_options(length, temperature, top_k, top_p, greedy)
    for prime in dict.fromkeys(primes):
        vocab.check(prime, f"the prime {prime!r}")
    generator = make_generator(device, seed)
    starts = [None if p else int(torch.randint(len(vocab), (1,), generator=generator,
                                               device=device)) for p in primes]
    with torch.inference_mode(), evaluating(model):
        hidden, logits = warm_up(model, vocab, primes, device)
        step = model.stepper(hidden, fast=fast)
    first = None
    if any(s is not None for s in starts):  # no context: the first character is a random one
        first = torch.tensor([0 if s is None else s for s in starts], device=device).unsqueeze(1)
        empty = torch.tensor([s is not None for s in starts], device=device).unsqueeze(1)
    watch = StopWatch(stop, len(primes))
    chars, block, done = vocab.chars, 1, 0
    while done < length and not all(watch.done):
        steps = min(block, length - done)
        with torch.inference_mode(), fast_step_context(device), evaluating(model):
            picked = []
            for _ in range(steps):
                if first is not None:
                    nxt = (first if all(s is not None for s in starts) else
                           torch.where(empty, first, pick_next(logits.float(), temperature,
                                                               top_k, top_p, greedy, generator)))
                    first = None
                else:
                    nxt = pick_next(logits.float(), temperature, top_k, top_p, greedy, generator)
                picked.append(nxt)
                logits = step(nxt)
            rows = torch.cat(picked, dim=1).tolist()  # (samples, steps), one copy per block
        for ids in zip(*rows):
            yield watch.see([chars[i] for i in ids])
            if all(watch.done):
                return
        done += steps
        block = min(block * 2, 64)
