"""How well a model predicts text: loss in nats per character, bits per character, perplexity.

The text is cut into a few parallel streams and read window by window with the hidden state
carried across the whole of it, without gradients.
"""

from __future__ import annotations

import math
import shlex

import torch
import torch.nn.functional as F

from charrnn.text.data import Corpus, eval_windows, load_training_corpus, widen
from charrnn.device import autocast
from charrnn.errors import DataError
from charrnn.text.fingerprint import describe_change, same_text, text_fingerprint
from charrnn.text.vocab import Vocab, describe_chars

VAL_STREAMS, VAL_SEQ_LEN = 16, 256  # how the validation split is read (see validation_loss)
LOGITS_AT_ONCE = 1 << 20  # logits (floats) computed at a time in an evaluation: 4 MB


@torch.no_grad()
def stream_loss(model, ids: torch.Tensor, device: torch.device, *, streams: int = VAL_STREAMS,
                seq_len: int = VAL_SEQ_LEN, max_windows: int | None = None,
                precision: str = "auto") -> tuple[float, int]:
    """Mean cross-entropy (nats) over every predicted character of `ids`, and their count.

    A window is read in as many steps at once as keep its logits within LOGITS_AT_ONCE
    (the hidden state is carried, so the result is the same): with a large vocab, a whole
    window's logits (16 x 256 x 5,000 floats, 82 MB) would be most of a run's memory.
    """
    was_training = model.training
    model.eval()
    total, count, hidden = torch.zeros((), dtype=torch.float64, device=device), 0, None
    width = _steps_at_once(model, streams, seq_len)
    try:
        for x, y, valid in eval_windows(ids, streams, seq_len, max_windows):
            x, y = x.to(device), y.to(device)
            valid = valid.to(device) if valid is not None else None
            for t in range(0, x.size(1), width):
                cols = slice(t, t + width)
                with autocast(device, precision):
                    logits, hidden = model(x[:, cols], hidden)
                target = y[:, cols].reshape(-1)
                losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target,
                                         reduction="none")
                if valid is not None:  # padding at the end of the last stream
                    keep = valid[:, cols].reshape(-1)
                    losses, count = losses[keep], count + int(keep.sum())
                else:
                    count += target.numel()
                total += losses.sum().double()
    finally:
        model.train(was_training)
    return (total.item() / count if count else float("nan")), count


def _steps_at_once(model, streams: int, seq_len: int) -> int:
    """Time steps per forward call, so that (streams x steps x vocab) <= LOGITS_AT_ONCE."""
    return max(1, min(seq_len, LOGITS_AT_ONCE // (streams * model.vocab_size)))


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
    ids, skipped = scored_ids(vocab, text, unknown)
    loss, chars = stream_loss(model, ids, device, streams=streams, seq_len=seq_len)
    return {**summarize(loss, chars), "skipped": skipped}


def scored_ids(vocab: Vocab, text: str, unknown: str = "error") -> tuple[torch.Tensor, int]:
    """The ids of `text` that are scored (see evaluate_text) and how many characters were
    skipped."""
    missing = vocab.missing(text)
    if missing and unknown != "skip":
        raise DataError(f"the text holds {len(missing)} character(s) not in the model's vocab: "
                        f"{describe_chars(missing)} (--unknown skip scores the rest)")
    kept = text.translate({ord(c): None for c in missing}) if missing else text
    ids = vocab.encode(kept)
    if len(ids) < 2:
        raise DataError("the text to evaluate needs at least 2 characters"
                        + (" the model knows" if missing else ""))
    return ids, len(text) - len(kept)


def adapted_summary(model, ids: torch.Tensor, device: torch.device, settings) -> dict:
    """The figures of dynamic evaluation (charrnn.analysis.adapt) of `ids`: summarize's, the seconds it
    took and the settings. `model` is left unchanged."""
    import time

    from charrnn.analysis.adapt import adaptive_loss
    started = time.perf_counter()
    loss, chars = adaptive_loss(model, ids, device, settings)
    return {**summarize(loss, chars), "seconds": round(time.perf_counter() - started, 2),
            **settings.as_dict()}


def training_validation_split(cfg, chars: list[str], trained_on: dict | None, *,
                              score_command: str) -> tuple[Corpus, str | None]:
    """The validation split of the text a model was trained on, rebuilt from that text.

    `trained_on` is the checkpoint's record of its text (text.fingerprint.text_fingerprint): a text that
    no longer matches it is refused, since its split is not the text the model held out. An
    older checkpoint without that record is scored unchecked, with the warning returned.
    `score_command` is the command that scores a text given after it (named in the errors).
    Returns (corpus, warning or None); raises DataError when the split cannot be rebuilt.
    """
    if not cfg.data.val_fraction:
        raise DataError("the model was trained with data.val_fraction: 0, so it has no "
                        "validation split to score: give the TEXT_FILE to score (or pipe it in)")
    if cfg.data.path == "-" and not cfg.data.corpus:
        raise DataError("cannot rebuild the validation split: the model was trained on text "
                        "from stdin; give the TEXT_FILE to score, or pipe it in")
    corpus = load_training_corpus(cfg, missing="if it has moved, give it as TEXT_FILE")
    corpus = widen(corpus, chars, cfg.data.val_fraction)  # a fine-tuned model's wider vocab
    rescore = f"{score_command} {shlex.quote(corpus.source)}"
    warning = None
    if trained_on is None:
        warning = (f"the checkpoint records no fingerprint of its training text (it is older), "
                   f"so {corpus.source} is scored unchecked as that text")
    else:
        now = text_fingerprint(corpus.ids)
        if not same_text(trained_on, now):
            raise DataError(f"{corpus.source} is not the text this model was trained on "
                            f"({describe_change(trained_on, now)}), so its validation split is "
                            f"not the one the model held out: restore that text, or score the "
                            f"text as it is now, whole, by giving it: {rescore}")
    if corpus.vocab != Vocab(chars):  # only an unrecorded text gets here
        raise DataError(f"cannot rebuild the validation split of {corpus.source}: its characters "
                        f"differ from the model's, so it is not the text the model was trained "
                        f"on; to score it anyway, give it: {rescore}")
    return corpus, warning
