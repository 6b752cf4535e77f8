"""`charrnn tune`: search around the plan under a wall-clock budget (Optuna, `charrnn[tune]`).

stdout carries the table of trials (or JSON with --json) and the best config's path; progress
goes to stderr. Ctrl-C (or SIGTERM) stops the search between steps, keeps what is done and
prints the best so far (exit 130); a second Ctrl-C ends the running trial at once (it is
recorded as failed), then the search ends the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional

import typer

from charrnn.cli.common import (QUIET_OPTION, StopRequests, flag_overrides, make_reporter,
                                train_config)
from charrnn.errors import ConfigError


def parse_minutes(text: str) -> float:
    """`90s`, `20m`, `1.5h` or a bare number of minutes, as minutes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--budget {text!r}: expected a duration such as 90s, 20m or 1.5h")
    return float(m.group(1)) * {"s": 1 / 60, "m": 1, "": 1, "h": 60}[m.group(2)]


def tune_cmd(
    config: Optional[Path] = typer.Argument(
        None, help="YAML config whose set keys stay fixed (default: none).", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Training text (sets "
                                       "data.path)."),
    budget: str = typer.Option(..., "--budget", "-b",
                               help="Wall-clock time for the whole search: 90s, 20m, 1.5h."),
    max_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", help="The length of run tuned for: each trial's budget "
                                    "(default: a tenth of --budget, at least 1 minute)."),
    overrides: List[str] = typer.Option(
        [], "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Fix one config value (repeatable): it is not searched."),
    out: Optional[str] = typer.Option(None, "--out", "-o",
                                      help="Tune folder: the study, trials, best.yaml, best/ "
                                           "(default: runs/tune-<text name>)."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL shared by workers on several machines "
                                "(default: an SQLite file in the tune folder)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search's sampler."),
    as_json: bool = typer.Option(False, "--json", help="The result as JSON on stdout."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Search around the plan for a better config under a time budget (successive halving);
    write the best as YAML, runnable with charrnn train. The same command again resumes the
    search.

    Example: charrnn tune --data data/tinyshakespeare.txt --budget 20m --max-minutes 2
    """
    minutes = parse_minutes(budget)
    trial_minutes = max_minutes if max_minutes is not None else max(1.0, minutes / 10)
    if trial_minutes > minutes:  # before the plan is printed: the error is the one line
        raise ConfigError(
            f"--max-minutes {trial_minutes:g} is more than the whole budget ({minutes:g} "
            f"minutes): one trial would not fit" if max_minutes is not None else
            f"--budget {budget} is under a trial's default minute (--max-minutes is a tenth "
            f"of the budget, at least 1): give a shorter --max-minutes, or more --budget")
    if config is None and data is None:
        raise ConfigError("give --data TEXT (and a CONFIG whose keys stay fixed)")
    sets = flag_overrides(overrides, {"--data": data, "--device": device,
                                      "--max-minutes": trial_minutes})
    cfg, user_keys = train_config(config, sets + ["train.plan=true"], None)
    from charrnn.training.tune import require_optuna, search_start, tune
    require_optuna()  # before any probe or run: say at once what is missing
    reporter = make_reporter(quiet)
    plan, fixed, train_chars = search_start(cfg, user_keys)
    for line in plan.describe():
        reporter.info(line)
    name = Path(cfg.train.out_dir).name
    tune_dir = Path(out or Path("runs") / f"tune-{name}")
    with StopRequests(reporter, "stopping the search after this step (the best so far is "
                                "kept)") as stop:
        result = tune(plan.config, fixed, tune_dir, budget_minutes=minutes,
                      trial_minutes=trial_minutes, train_chars=train_chars, storage=storage,
                      study_name=f"charrnn-{name}-{trial_minutes:g}m", seed=seed,
                      on_trial=lambda row: reporter.info(_trial_line(row)), should_stop=stop)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_table(result)
    if result.interrupted:
        raise typer.Exit(130)


def _trial_line(row: dict) -> str:
    loss = f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-"
    return (f"trial {row['trial']} {row['state']}: val loss {loss} "
            f"{'(the plan) ' if row['plan'] else ''}{row['params']}")


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"trials in {result.tune_dir}")
    for column in ("trial", "state", "val loss", "steps", "minutes", "settings"):
        table.add_column(column)
    for row in result.trials:
        loss = f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-"
        settings = ", ".join(f"{k.split('.')[1]}={v:.3g}" if isinstance(v, float)
                             else f"{k.split('.')[1]}={v}" for k, v in row["params"].items())
        mark = " (best)" if row["trial"] == result.best_trial else ""
        table.add_row(f"{row['trial']}{mark}", row["state"] + (" (plan)" if row["plan"] else ""),
                      loss, str(row["steps"] or "-"), str(row["minutes"] or "-"), settings)
    console = Console(width=160)
    console.print(table)
    if result.best_config is not None:
        console.print(f"best: trial {result.best_trial}, val loss {result.best_loss:.4f}; config "
                      f"{result.tune_dir / 'best.yaml'} (train it: charrnn train "
                      f"{result.tune_dir / 'best.yaml'}); its run: {result.tune_dir / 'best'}",
                      markup=False)
