"""Beam search over characters: the likeliest continuations of a prime, deterministically.

A continuation's score is the sum of the log-probabilities of its characters given the prime.
Each step extends every live beam by every character and keeps the `width` best; a beam that
produces a stop text is finished. Ranking divides a score by length**length_penalty (0: the
plain sum). Greedy decoding's continuation is always a candidate as well, so the best result
never scores below it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from charrnn.device import fast_step_context
from charrnn.errors import SamplingError
from charrnn.generation.sampling import generate, read_chunks, warm_up
from charrnn.models.stepper import evaluating
from charrnn.text.vocab import Vocab


def log_prob(model, vocab: Vocab, prime: str, text: str, device: torch.device) -> float:
    """Sum of log p(text[i] | prime + text[:i]) under the model (in eval mode; the model is
    left in the mode it was in)."""
    if not text:
        return 0.0
    ids = vocab.encode(prime + text)
    total, start, first = 0.0, 0, len(prime) - 1  # the logits at `first` predict text[0]
    with torch.inference_mode(), evaluating(model):
        for logits, _ in read_chunks(model, ids[:-1], device):
            end = start + logits.size(0)
            if end > first:
                logp = torch.log_softmax(logits[max(first - start, 0):].float(), -1)
                targets = ids[max(first, start) + 1:end + 1].to(device, torch.long)
                total += float(logp.gather(-1, targets[:, None]).sum())
            start = end
    return total


def _rank(score: float, text: str, penalty: float) -> float:
    return score / max(len(text), 1) ** penalty if penalty else score


def beam_search(model, vocab: Vocab, prime: str, length: int, *, width: int,
                device: torch.device, results: int = 1, stop: Sequence[str] = (),
                length_penalty: float = 0.0) -> list[tuple[str, float]]:
    """The `results` best (continuation, score) pairs of `prime`, best first (in eval mode; the
    model is left in the mode it was in)."""
    if not prime:
        raise SamplingError("beam search needs a prime to start from")
    if not 1 <= results <= width:
        raise SamplingError(f"asked for {results} results from {width} beams")
    vocab.check(prime, f"the prime {prime!r}")
    stops = [s for s in stop if s]
    finished: dict[str, float] = {}
    with torch.inference_mode(), evaluating(model):
        hidden, logits = warm_up(model, vocab, [prime], device)
    with torch.inference_mode(), fast_step_context(device), evaluating(model):
        step = model.stepper(hidden)
        texts, scores = [""], torch.zeros(1, device=device)
        for _ in range(length):
            total = (scores[:, None] + torch.log_softmax(logits.float(), -1)).flatten()
            top = torch.topk(total, min(width, total.numel()))
            size = logits.size(-1)
            parents, chars = (top.indices // size).tolist(), (top.indices % size).tolist()
            texts = [texts[p] + vocab.chars[c] for p, c in zip(parents, chars)]
            scores = top.values
            live = [i for i, t in enumerate(texts) if not any(t.endswith(s) for s in stops)]
            for i in set(range(len(texts))) - set(live):
                finished[texts[i]] = float(scores[i])
            if not live:
                break
            keep = torch.tensor(live, device=device)
            parent = torch.tensor(parents, device=device).index_select(0, keep)
            texts, scores = [texts[i] for i in live], scores.index_select(0, keep)
            step.reorder(parent)
            logits = step(torch.tensor([chars[i] for i in live], device=device)[:, None])
        else:
            finished.update((t, float(s)) for t, s in zip(texts, scores.tolist()))
    greedy = "".join(c for (c,) in generate(model, vocab, [prime], length, device=device,
                                            greedy=True, stop=stops))
    finished.setdefault(greedy, log_prob(model, vocab, prime, greedy, device))
    ranked = sorted(finished.items(), key=lambda kv: -_rank(kv[1], kv[0], length_penalty))
    return ranked[:results]
