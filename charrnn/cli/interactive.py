"""`charrnn sample --interactive`: a prompt where the model carries on the conversation.

Each line typed is read into the model after everything before it, and its continuation
streams back a character at a time; the hidden state is kept between turns until `/reset`.
input() gets line editing and history from readline. Ctrl-C stops the continuation being
written (the state keeps what was written), Ctrl-C at the prompt clears the line, Ctrl-D quits.
"""

from __future__ import annotations

import signal
import sys

try:
    import readline  # noqa: F401  (gives input() line editing and history)
except ImportError:  # pragma: no cover - Windows without pyreadline
    pass

import torch

from charrnn.device import fast_step_context
from charrnn.errors import CharRNNError, SamplingError
from charrnn.generation.sampling import StopWatch, check_options, make_generator, pick_next, warm_up

HELP = ("type text and press Enter: the model continues it. /reset forgets the conversation, "
        "/temp T sets the temperature, /len N the length, /help shows this; Ctrl-C stops a "
        "continuation, Ctrl-D quits")


class _Conversation:
    def __init__(self, model, vocab, device, settings: dict, seed):
        self.model, self.vocab, self.device, self.s = model, vocab, device, settings
        self.generator = make_generator(device, seed)
        self.hidden = self.logits = None
        self.interrupted = False

    def command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        try:
            if name == "/reset":
                self.hidden = self.logits = None
                say("conversation reset")
            elif name == "/temp":
                temperature = float(arg)
                check_options(0, temperature, None, None, False)
                self.s.update(temperature=temperature, greedy=False)
                say(f"temperature {temperature}")
            elif name == "/len":
                length = int(arg)
                check_options(length, 1.0, None, None, False)
                self.s["length"] = length
                say(f"length {length}")
            elif name == "/help":
                say(HELP)
            else:
                raise SamplingError(f"unknown command {name} (/help lists them)")
        except ValueError:
            say(f"error: {name} needs a number, e.g. {name} {'0.5' if name == '/temp' else 300}")
        except CharRNNError as exc:
            say(f"error: {exc}")

    def turn(self, text: str, out) -> None:
        """Read `text` into the model and stream its continuation to `out`."""
        self.vocab.check(text, "the text")
        s, chars = self.s, self.vocab.chars
        with torch.inference_mode():
            if not text and self.hidden is None:  # nothing to go on: start from a random char
                text = chars[int(torch.randint(len(chars), (1,), generator=self.generator,
                                               device=self.device))]
                out.write(text)
            if text:
                self.hidden, self.logits = warm_up(self.model, self.vocab, [text], self.device,
                                                   self.hidden)
        with torch.inference_mode(), fast_step_context(self.device):
            step, logits = self.model.stepper(self.hidden), self.logits
            watch = StopWatch(s["stop"], 1)
            self.interrupted, last = False, ""
            previous = signal.signal(signal.SIGINT, self._interrupt)
            try:
                for _ in range(s["length"]):
                    if self.interrupted or watch.done[0]:
                        break
                    nxt = pick_next(logits.float(), s["temperature"], s["top_k"], s["top_p"],
                                    s["greedy"], self.generator)
                    logits = step(nxt)
                    last = watch.see([chars[int(nxt)]])[0]
                    out.write(last)
                    out.flush()
            finally:
                signal.signal(signal.SIGINT, previous)
            self.hidden, self.logits = step.hidden, logits.clone()
        if last != "\n":  # a continuation that ends a line (--stop '\n') gets no empty one
            out.write("\n")
        out.flush()

    def _interrupt(self, signum, frame) -> None:
        self.interrupted = True


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def prompt_loop(model, vocab, device, prime: str, *, length: int, temperature: float,
                top_k, top_p, greedy: bool, seed, stop) -> None:
    """Run the prompt until end of input (Ctrl-D)."""
    settings = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                    greedy=greedy, stop=list(stop))
    talk = _Conversation(model, vocab, device, settings, seed)
    out = sys.stdout
    # Prompts are for a person typing: with stdin piped, stdout holds the continuations alone.
    tty = sys.stdin.isatty()
    say(HELP)
    if prime:
        out.write(prime)
        talk.turn(prime, out)
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            out.write("\n" if tty else "")  # ends the prompt's line
            return
        except KeyboardInterrupt:
            out.write("\n" if tty else "")
            continue
        if line.startswith("/"):
            talk.command(line.strip())
            continue
        try:
            talk.turn(line, out)
        except CharRNNError as exc:
            say(f"error: {exc}")
