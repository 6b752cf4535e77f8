"""`charrnn sample`: generate text from a checkpoint (the work is in generation/)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from charrnn.cli.common import (CHECKPOINT_OPTION, DEVICE_OPTION, QUIET_OPTION, decode_escapes,
                                load_model, make_reporter)
from charrnn.config import INT64_MAX, SEED_MAX
from charrnn.errors import DataError, SamplingError


def _read_primes(path: str, reporter) -> list[str]:
    """The non-blank lines of a file or stdin; blank lines are skipped and counted on stderr."""
    from charrnn.text.data import read_text

    if path != "-" and not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "not found"
        raise DataError(f"prime file {what}: {path}")
    lines = read_text(path).splitlines()
    primes = [line for line in lines if line]
    if not primes:
        raise DataError(f"--prime-file {path}: no primes in it (one per line)")
    if len(primes) < len(lines):
        reporter.info(f"skipped {len(lines) - len(primes)} blank line(s) of "
                      f"{'stdin' if path == '-' else path}")
    return primes


def _ending(text: str, ending: str) -> str:
    """What to write after `text` (only its end is looked at): `ending`, less its leading
    newline where the text already ends in one (no blank line before a separator, no empty
    last line after a sample stopped by --stop '\\n')."""
    return ending[1:] if text.endswith("\n") and ending.startswith("\n") else ending


def _check_combinations(prime, prime_file, greedy, beam, num_samples, temperature, top_k,
                        top_p, seed, interactive, as_json) -> None:
    """Options that contradict each other are errors, not silently ignored."""
    if prime is not None and prime_file is not None:
        raise SamplingError("--prime and --prime-file cannot be used together: give one")
    if interactive:
        clash = [name for name, given in (("--prime-file", prime_file is not None),
                                          ("--beam", beam is not None), ("--json", as_json),
                                          ("--num-samples", num_samples != 1)) if given]
        if clash:
            raise SamplingError(f"--interactive is one conversation: drop {' and '.join(clash)}")
    chance = [name for name, value in (("--temperature", temperature), ("--top-k", top_k),
                                       ("--top-p", top_p)) if value is not None]
    if greedy and chance:
        raise SamplingError(f"--greedy always takes the likeliest character: drop "
                            f"{' and '.join(chance)}")
    if beam is not None:
        if beam < 1:
            raise SamplingError(f"--beam must be 1 or more, got {beam}")
        if greedy or chance or seed is not None:
            given = ["--greedy"] * greedy + chance + ["--seed"] * (seed is not None)
            raise SamplingError(f"--beam is deterministic: drop {' and '.join(given)}")
        if num_samples > beam:
            from charrnn.report import plural
            raise SamplingError(f"--num-samples {num_samples} is more than --beam {beam}: "
                                f"beam search keeps only {plural(beam, 'candidate')}")


def _stops_and_primes(stop: List[str], prime: Optional[str], prime_file: Optional[str],
                      beam: Optional[int], length_penalty: float, reporter):
    """The --stop texts and the primes, decoded and checked against each other and --beam."""
    stops = [decode_escapes(s, "--stop") for s in stop]
    if any(not s for s in stops):
        raise SamplingError("--stop needs a non-empty TEXT")
    if prime_file is not None:
        primes = _read_primes(prime_file, reporter)
    else:
        primes = [decode_escapes(prime or "", "--prime")]
    if not math.isfinite(length_penalty):
        raise SamplingError(f"--length-penalty must be a finite number, got {length_penalty}")
    if length_penalty and beam is None:
        raise SamplingError("--length-penalty ranks beams: use it with --beam N")
    if beam is not None and not all(primes):
        raise SamplingError("--beam needs a --prime (or --prime-file) to start from")
    return stops, primes


def _stream(out, prime: str, steps) -> None:
    """One sample written as it is generated: a character at a time to a terminal, else a line
    (or 256 characters) at a time."""
    chunk, tty, last = [prime], out.isatty(), prime[-1:]
    for (ch,) in steps:
        chunk.append(ch)
        last = ch or last
        if tty or ch == "\n" or len(chunk) >= 256:
            out.write("".join(chunk))
            out.flush()
            chunk.clear()
    out.write("".join(chunk) + _ending(last, "\n"))
    out.flush()


def _write_beams(out, found: list, sep: str, as_json: bool) -> None:
    """The beams found, (prime, text, score) each: as JSON, or the texts with their endings."""
    if as_json:
        out.write(json.dumps([{"prime": p, "text": t, "score": sc} for p, t, sc in found],
                             ensure_ascii=False) + "\n")
    else:
        end = "\n" if len(found) == 1 else sep
        out.write("".join(p + t + _ending(t or p, end) for p, t, _ in found))
    out.flush()


def sample_cmd(
    checkpoint: Optional[str] = CHECKPOINT_OPTION,
    prime: Optional[str] = typer.Option(
        None, "--prime", "-p", show_default=False,
        help="Text to start from; the output begins with it (escapes such as \\n and \\t work). "
             "Default: start from a random character."),
    prime_file: Optional[str] = typer.Option(
        None, "--prime-file", metavar="FILE|-",
        help="Read primes from a file or stdin, one per line; each line is continued on its own "
             "(one batch). Blank lines are skipped (their count goes to stderr)."),
    length: Optional[int] = typer.Option(None, "--length", "-n", max=INT64_MAX,
                                         help="Characters to generate after the prime "
                                              "(default: the checkpoint config's "
                                              "sample.length)."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", "-t", help="Softmax temperature, above 0: lower is safer, higher "
                                          "is wilder (default: the config's, else 0.8)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", max=INT64_MAX,
                                        help="Sample only from the K likeliest characters."),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", help="Sample from the smallest set of characters whose probability "
                              "reaches P, in (0, 1]."),
    greedy: bool = typer.Option(False, "--greedy",
                                help="Always take the likeliest character (deterministic)."),
    stop: List[str] = typer.Option(
        [], "--stop", metavar="TEXT",
        help="End a sample at the first occurrence of TEXT in the generated text, TEXT "
             "included (repeatable; escapes such as \\n work). --length still caps it."),
    beam: Optional[int] = typer.Option(
        None, "--beam", metavar="N", max=INT64_MAX,
        help="Beam search with N beams: the likeliest continuation by the sum of "
             "log-probabilities (deterministic; needs a prime)."),
    length_penalty: float = typer.Option(
        0.0, "--length-penalty", metavar="ALPHA", min=0.0,
        help="With --beam and --stop: rank finished beams by score / length**ALPHA (0: the "
             "plain sum; above 0 favours longer texts)."),
    num_samples: int = typer.Option(1, "--num-samples", "-N", min=1, max=INT64_MAX,
                                    help="Samples per prime, generated as one batch (with "
                                         "--beam: the K best beams, K <= N)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=SEED_MAX,
                                       help="Random seed: the same seed gives the same sample."),
    interactive: bool = typer.Option(
        False, "--interactive", "-i",
        help="A prompt: type a prime, its continuation streams back, and the model keeps the "
             "conversation. /reset, /temp T, /len N, /help; Ctrl-C stops a continuation, "
             "Ctrl-D quits."),
    device: str = DEVICE_OPTION,
    separator: str = typer.Option(
        "\\n---\\n", "--separator", metavar="TEXT",
        help="Written after each sample when there are several (escapes such as \\n and \\0 "
             "work)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print a JSON list of {prime, text} objects instead "
                                      "(text is what follows the prime; with --beam also "
                                      "score)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Generate text from a trained model, streaming it to stdout.

    Example: charrnn sample --prime "sharks" --length 200 --temperature 0.7
    """
    from charrnn.generation.sampling import check_options

    reporter = make_reporter(quiet)
    _check_combinations(prime, prime_file, greedy, beam, num_samples, temperature, top_k,
                        top_p, seed, interactive, as_json)
    check_options(length or 0, temperature if temperature is not None else 0.8, top_k, top_p,
                  greedy)
    sep = decode_escapes(separator, "--separator")
    stops, primes = _stops_and_primes(stop, prime, prime_file, beam, length_penalty, reporter)
    loaded = load_model(checkpoint, device)
    with loaded.blame():
        for p in primes:
            loaded.vocab.check(p, f"the prime {p!r}")
    length, temperature, top_k, top_p = loaded.api.sample_options(length, temperature, top_k,
                                                                  top_p)
    if interactive:
        from charrnn.cli.interactive import prompt_loop
        reporter.info(loaded.note)
        prompt_loop(loaded.model, loaded.vocab, loaded.device, primes[0], length=length,
                    temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                    seed=seed, stop=stops)
    elif beam is not None:
        reporter.info(loaded.note)
        found = [(p, text, score) for p in primes
                 for text, score in loaded.api.beam(p, beam, length, results=num_samples,
                                                    stop=stops, length_penalty=length_penalty)]
        _write_beams(sys.stdout, found, sep, as_json)
    else:
        _check_batch_fits(loaded, len(primes), num_samples, length, stops, as_json)
        primes = [p for p in primes for _ in range(num_samples)]
        reporter.info(loaded.note)  # only once every input is known to be good
        steps = loaded.api.generate_many(primes, length, temperature=temperature, top_k=top_k,
                                         top_p=top_p, greedy=greedy, seed=seed, stop=stops)
        _write_samples(sys.stdout, primes, steps, sep, as_json)


def _check_batch_fits(loaded, primes: int, num_samples: int, length: int, stops: list,
                      as_json: bool) -> None:
    """A batch of samples that would not fit in memory is refused before it starts (a single
    streamed sample, or one that --stop may end early, keeps no text to fit)."""
    from charrnn.generation.sampling import check_batch_fits
    samples = primes * num_samples
    streamed = samples == 1 and not as_json
    check_batch_fits(loaded.model, len(loaded.vocab), samples,
                     0 if streamed or stops else length,
                     f"--num-samples {num_samples}"
                     + (f" for each of {primes} primes" if primes > 1 else "")
                     + f" with --length {length}")


def _write_samples(out, primes: list[str], steps, sep: str, as_json: bool) -> None:
    """Samples as they are generated: one streamed, several (or --json) once all are done."""
    if len(primes) == 1 and not as_json:
        _stream(out, primes[0], steps)
        return
    texts = ["".join(parts) for parts in zip(*steps)] or [""] * len(primes)
    if as_json:
        out.write(json.dumps([{"prime": p, "text": t} for p, t in zip(primes, texts)],
                             ensure_ascii=False) + "\n")
    else:
        out.write("".join(p + t + _ending(t or p, sep) for p, t in zip(primes, texts)))
    out.flush()
