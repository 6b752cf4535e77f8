"""How well a model predicts text: loss in nats per character, bits per character, perplexity.

The text is cut into a few parallel streams and read window by window with the hidden state
carried across the whole of it, without gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from charrnn.data import eval_windows
from charrnn.device import autocast
from charrnn.errors import DataError
from charrnn.vocab import Vocab, describe_chars

VAL_STREAMS, VAL_SEQ_LEN = 16, 256  # how the validation split is read (see validation_loss)


@torch.no_grad()
def stream_loss(model, ids: torch.Tensor, device: torch.device, *, streams: int = VAL_STREAMS,
                seq_len: int = VAL_SEQ_LEN, max_windows: int | None = None,
                precision: str = "auto") -> tuple[float, int]:
    """Mean cross-entropy (nats) over every predicted character of `ids`, and their count."""
    was_training = model.training
    model.eval()
    total, count, hidden = torch.zeros((), dtype=torch.float64, device=device), 0, None
    try:
        for x, y, valid in eval_windows(ids, streams, seq_len, max_windows):
            x, y = x.to(device), y.to(device)
            with autocast(device, precision):
                logits, hidden = model(x, hidden)
            losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                     reduction="none")
            if valid is not None:  # padding at the end of the last stream
                valid = valid.to(device).reshape(-1)
                losses, count = losses[valid], count + int(valid.sum())
            else:
                count += y.numel()
            total += losses.sum().double()
    finally:
        model.train(was_training)
    return (total.item() / count if count else float("nan")), count


def validation_loss(model, val_ids: torch.Tensor, device: torch.device, *,
                    max_windows: int | None = None, precision: str = "auto") -> tuple[float, int]:
    """The validation loss of a run, defined once: training's evaluations and `charrnn eval`
    without a text both read the split as VAL_STREAMS streams of VAL_SEQ_LEN windows, whatever
    the batch shape of training. `max_windows` (train.eval_batches) reads only the first ones.
    """
    return stream_loss(model, val_ids, device, streams=VAL_STREAMS, seq_len=VAL_SEQ_LEN,
                       max_windows=max_windows, precision=precision)


def summarize(loss: float, chars: int) -> dict:
    """The figures `charrnn eval` reports for a mean loss in nats."""
    return {"loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss), "chars": chars}


def evaluate_text(model, vocab: Vocab, text: str, device: torch.device, *, streams: int = 16,
                  seq_len: int = 256, unknown: str = "error") -> dict:
    """Loss, bits per character and perplexity of `model` on `text` (all but its first char).

    `unknown="skip"` drops the characters the vocab lacks before scoring: they are never
    targets, and never inputs either (the model reads the text as if they were not there; its
    state is carried across the gap, not reset). The result's `skipped` counts them.
    """
    missing = vocab.missing(text)
    if missing and unknown != "skip":
        raise DataError(f"the text holds {len(missing)} character(s) not in the model's vocab: "
                        f"{describe_chars(missing)} (--unknown skip scores the rest)")
    kept = text.translate({ord(c): None for c in missing}) if missing else text
    ids = vocab.encode(kept)
    if len(ids) < 2:
        raise DataError("the text to evaluate needs at least 2 characters"
                        + (" the model knows" if missing else ""))
    loss, chars = stream_loss(model, ids, device, streams=streams, seq_len=seq_len)
    return {**summarize(loss, chars), "skipped": len(text) - len(kept)}
