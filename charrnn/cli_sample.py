"""`charrnn sample`: generate text from a checkpoint (the work is in sampling.py)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from charrnn.cli_common import (CHECKPOINT_OPTION, DEVICE_OPTION, QUIET_OPTION, decode_escapes,
                                load_model, make_reporter)
from charrnn.errors import DataError


# ------------------------------------------------------------------------------------ sample

def sample_cmd(
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    prime: str = typer.Option("", "--prime", "-p",
                              help="Text to start from; the output begins with it. Empty: start "
                                   "from a random character."),
    prime_file: Optional[str] = typer.Option(
        None, "--prime-file", metavar="FILE|-",
        help="Read primes from a file or stdin, one per line; each line is continued on its own "
             "(one batch)."),
    length: Optional[int] = typer.Option(None, "--length", "-n",
                                         help="Characters to generate after the prime "
                                              "(default: the config's sample.length)."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", "-t", help="Softmax temperature, above 0: lower is safer, higher "
                                          "is wilder (default: the config's, else 0.8)."),
    top_k: Optional[int] = typer.Option(None, "--top-k",
                                        help="Sample only from the K likeliest characters."),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", help="Sample from the smallest set of characters whose probability "
                              "reaches P, in (0, 1]."),
    greedy: bool = typer.Option(False, "--greedy",
                                help="Always take the likeliest character (deterministic)."),
    num_samples: int = typer.Option(1, "--num-samples", "-N", min=1,
                                    help="Samples per prime, generated as one batch."),
    seed: Optional[int] = typer.Option(None, "--seed",
                                       help="Random seed: the same seed gives the same sample."),
    device: str = DEVICE_OPTION,
    separator: str = typer.Option(
        "\\n---\\n", "--separator", metavar="TEXT",
        help="Written after each sample when there are several (escapes such as \\n and \\0 "
             "work)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print a JSON list of {prime, text} objects instead "
                                      "(text is what follows the prime)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Generate text from a trained model, streaming it to stdout.

    Example: charrnn sample --prime "sharks" --length 200 --temperature 0.7
    """
    from charrnn.data import read_text
    from charrnn.sampling import check_options, generate

    reporter = make_reporter(quiet)
    greedy_or_temp = temperature if temperature is not None else 0.8
    check_options(length or 0, greedy_or_temp, top_k, top_p, greedy)
    primes = [prime]
    if prime_file is not None:
        primes = [line for line in read_text(prime_file).splitlines() if line]
        if not primes:
            raise DataError(f"--prime-file {prime_file}: no primes in it (one per line)")
    loaded = load_model(checkpoint, device)
    model, vocab, cfg, dev = loaded.model, loaded.vocab, loaded.cfg, loaded.device
    with loaded.blame():
        for p in primes:
            vocab.check(p, f"the prime {p!r}")
    reporter.info(loaded.note)  # only once every input is known to be good
    s = cfg.sample
    primes = [p for p in primes for _ in range(num_samples)]
    steps = generate(model, vocab, primes, s.length if length is None else length, device=dev,
                     temperature=s.temperature if temperature is None else temperature,
                     top_k=top_k if top_k is not None else s.top_k,
                     top_p=top_p if top_p is not None else s.top_p,
                     greedy=greedy, seed=seed)
    out = sys.stdout
    if len(primes) == 1 and not as_json:  # stream as it is generated, a line at a time
        chunk, interactive = [primes[0]], out.isatty()
        for (ch,) in steps:
            chunk.append(ch)
            if interactive or ch == "\n" or len(chunk) >= 256:
                out.write("".join(chunk))
                out.flush()
                chunk.clear()
        out.write("".join(chunk) + "\n")
        out.flush()
        return
    texts = ["".join(parts) for parts in zip(*steps)] if primes else []
    texts = texts or [""] * len(primes)
    if as_json:
        out.write(json.dumps([{"prime": p, "text": t} for p, t in zip(primes, texts)],
                             ensure_ascii=False) + "\n")
    else:
        sep = decode_escapes(separator)
        out.write("".join(p + t + sep for p, t in zip(primes, texts)))
    out.flush()
