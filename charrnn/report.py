"""Messages and training progress on stderr, for the CLI; and `plural`, the wording helper that
the library's own log lines share with it.

A progress bar (rich) appears only when stderr is a terminal; otherwise plain log lines, one per
logged step. `--quiet` silences everything but errors; rich honours NO_COLOR by itself.
"""

from __future__ import annotations

import sys

from rich.console import Console


def plural(count: float, noun: str, spec: str = "") -> str:
    """`count noun`, the noun in the plural unless the count is one: "1 thread", "2 threads"."""
    return f"{count:{spec}} {noun}{'' if count == 1 else 's'}"


class Reporter:
    """Everything the CLI says on stderr, apart from the final `error:` line."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.interactive = self.console.is_terminal and not quiet
        self._progress = None
        self._task = None
        self._start: dict = {}

    def info(self, message: str) -> None:
        if self.quiet:
            return
        if self.interactive:
            self.console.print(message, markup=False, soft_wrap=True)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def warn(self, message: str) -> None:
        self.info(f"warning: {message}")

    # --------------------------------------------------------------- training events

    def training_event(self, kind: str, info: dict) -> None:
        """The `on_event` callback of `charrnn.training.loop.train`."""
        if self.quiet:
            return
        getattr(self, f"_on_{kind}", lambda info: None)(info)

    def _on_start(self, info: dict) -> None:
        self._start = info  # the time budget's progress is measured from here
        verb = "resuming" if info["resumed_from"] else "training"
        threads = plural(info["threads"], "thread")
        self.info(f"{verb} {info['model']} ({info['parameters']:,} parameters, vocab "
                  f"{info['vocab_size']}) on {info['device']} ({threads}) "
                  f"from step {info['start_step']} to {info['max_steps']}{self._budget(info)}; "
                  f"{info['train_chars']:,} train / {info['val_chars']:,} val characters"
                  f"{' (cached)' if info['cached'] else ''}; run directory {info['run_dir']}")
        for change in info["changes"]:
            self.info(f"changed on resume: {change}")
        if self.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self.console,
                                      transient=False)
            self._task = self._progress.add_task("train", total=info["max_steps"],
                                                 completed=info["start_step"], status="")
            self._progress.start()

    @staticmethod
    def _budget(info: dict) -> str:
        if not info.get("max_minutes"):
            return ""
        spent = f", {info['elapsed'] / 60:.3g} spent" if info.get("elapsed") else ""
        budget = plural(info["max_minutes"], "minute", "g")
        return f" or for {budget}{spent}, whichever comes first"

    def _end_step(self, info: dict) -> int:
        """The last step: max_steps, or the step at which the time budget should run out."""
        start = self._start
        if not start.get("max_minutes"):
            return info["max_steps"]
        done, took = info["step"] - start["start_step"], info["time"] - start["elapsed"]
        left = start["max_minutes"] * 60 - info["time"]
        if done <= 0 or took <= 0:
            return info["max_steps"]
        return min(info["max_steps"], info["step"] + max(0, round(left * done / took)))

    def _on_step(self, info: dict) -> None:
        end = self._end_step(info)
        shown = f"~{end:,}" if end < info["max_steps"] else f"{info['max_steps']}"
        line = (f"step {info['step']}/{shown}  loss {info['train_loss']:.4f}  "
                f"lr {info['lr']:.2e}  {info['chars_per_sec']:,.0f} chars/s")
        if self._progress is not None:
            self._progress.update(self._task, completed=info["step"], total=end,
                                  status=f"loss {info['train_loss']:.4f}")
        else:
            self.info(line)

    def _on_eval(self, info: dict) -> None:
        mark = " (best)" if info["improved"] else ""
        self._print(f"step {info['step']}  val loss {info['val_loss']:.4f}{mark}")

    def _on_sample(self, info: dict) -> None:
        self._print(f"sample at step {info['step']}:\n{info['text']}")

    def _on_note(self, info: dict) -> None:
        self._print(("warning: " if info.get("warning", True) else "") + info["message"])

    def _print(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False)
        else:
            self.info(message)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
