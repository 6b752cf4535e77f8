"""`charrnn eval`: how well a model predicts a text, statically and (`--adapt`) while learning
from it (the work is in analysis/evaluate.py and analysis/adapt.py)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Optional

import typer

from charrnn.cli.adapt import (ADAPT_DECAY_OPTION, ADAPT_LR_OPTION, ADAPT_OPTION,
                               ADAPT_STREAMS_OPTION, ADAPT_WINDOW_OPTION, adapt_settings)
from charrnn.cli.adapt import describe as describe_adapt
from charrnn.cli.common import (CHECKPOINT_OPTION, DEVICE_OPTION, QUIET_OPTION, load_model,
                                make_reporter)


def eval_cmd(
    text_file: Optional[str] = typer.Argument(
        None, metavar="[TEXT_FILE|-]",
        help="Text to score (- for stdin). Default: stdin when it is not a terminal and not "
             "empty, else the validation split of the text the model was trained on.",
        show_default=False),
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    unknown: str = typer.Option(
        "error", "--unknown", metavar="error|skip",
        help="Characters the model has never seen: error (the default), or skip them, scoring "
             "the rest as if they were not in the text; their count is reported."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: loss, bpc, "
                                                       "perplexity, chars, skipped (with "
                                                       "--adapt: and adapted)."),
    adapt: bool = ADAPT_OPTION,
    adapt_lr: Optional[float] = ADAPT_LR_OPTION,
    adapt_decay: Optional[float] = ADAPT_DECAY_OPTION,
    adapt_window: Optional[int] = ADAPT_WINDOW_OPTION,
    adapt_streams: Optional[int] = ADAPT_STREAMS_OPTION,
    device: str = DEVICE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Measure how well a model predicts a text: loss (nats/char), bits per char, perplexity.

    --adapt also scores it with a model that learns as it reads (dynamic evaluation), next to
    the static figures.

    Example: charrnn eval --checkpoint runs/tiny data/foodchain.txt --json
    """
    from charrnn.analysis.evaluate import adapted_summary

    if unknown not in ("error", "skip"):
        raise typer.BadParameter(f"expected error or skip, got {unknown!r}",
                                 param_hint="'--unknown'")
    settings = adapt_settings(adapt, adapt_lr, adapt_decay, adapt_window, adapt_streams)
    started = time.perf_counter()
    reporter = make_reporter(quiet)
    text, what = _text_to_score(text_file)
    loaded = load_model(checkpoint, device)
    with loaded.blame():
        result, ids = (_score_text(loaded, text, what, unknown, bool(settings), reporter)
                       if text is not None else _score_validation_split(loaded, reporter))
        if settings:
            result["seconds"] = round(time.perf_counter() - started, 2)
            reporter.info(f"scoring again while learning ({describe_adapt(settings)})")
            result["adapted"] = adapted_summary(loaded.model, ids, loaded.device, settings)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(_report(result, unknown == "skip", settings))


def _text_to_score(text_file: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """The text named (or piped in) and what to call it; (None, None) for the validation split."""
    from charrnn.text.data import read_text

    if text_file is not None:
        return read_text(text_file), ("stdin" if text_file == "-" else text_file)
    if sys.stdin is not None and not sys.stdin.isatty():
        text = read_text("-")  # as wc does; an empty stdin means no text
        return (text, "stdin") if text else (None, None)
    return None, None


def _score_text(loaded, text: str, what: str, unknown: str, keep_ids: bool, reporter):
    """The summary of `text` and (for --adapt) its ids as scored."""
    from charrnn.analysis.evaluate import scored_ids
    from charrnn.text.vocab import describe_chars

    result = loaded.api.score(text, unknown=unknown, log_probs=False).summary()
    ids = scored_ids(loaded.vocab, text, unknown)[0] if keep_ids else None
    reporter.info(loaded.note)
    reporter.info(f"scored {what} ({len(text):,} characters)")
    if result["skipped"]:
        reporter.info(f"skipped {result['skipped']:,} occurrence(s) of "
                      f"{describe_chars(loaded.vocab.missing(text))}: not in the model's vocab")
    return result, ids


def _score_validation_split(loaded, reporter):
    """The summary of the validation split of the text the model was trained on, and its ids."""
    from charrnn.analysis.evaluate import summarize, training_validation_split, validation_loss

    corpus, warning = training_validation_split(
        loaded.cfg, loaded.vocab.chars, loaded.trained_on,
        score_command=f"charrnn eval -c {shlex.quote(str(loaded.path))}")
    reporter.info(loaded.note)
    if warning:
        reporter.warn(warning)
    reporter.info(f"scoring the validation split of {corpus.source} "
                  f"({len(corpus.val):,} characters)")
    result = {**summarize(*validation_loss(loaded.model, corpus.val, loaded.device)), "skipped": 0}
    return result, corpus.val


def _line(r: dict, tail: str = "") -> str:
    return (f"loss {r['loss']:.4f} nats/char  bpc {r['bpc']:.4f}  "
            f"perplexity {r['perplexity']:.3f}  chars {r['chars']:,}{tail}")


def _report(result: dict, skipping: bool, settings) -> str:
    """The plain-text report: one line, or static, adapted and gain lines with --adapt."""
    skipped = f"  skipped {result['skipped']:,}" if skipping else ""
    if not settings:
        return _line(result, skipped) + "\n"
    adapted = result["adapted"]
    return (f"static   {_line(result, skipped)}  {result['seconds']:.1f} s\n"
            f"adapted  {_line(adapted)}  {adapted['seconds']:.1f} s  "
            f"({describe_adapt(settings)})\n"
            f"gain     {result['loss'] - adapted['loss']:.4f} nats/char  "
            f"{result['bpc'] - adapted['bpc']:.4f} bpc\n")
