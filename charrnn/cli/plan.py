"""`charrnn plan`: what a planned run would use on this text, device and budget, and why.

It takes the options of `charrnn train` that shape a run and trains nothing; stdout carries
the plan (text, or JSON with --json), so `charrnn plan ... --json | jq` works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from charrnn.cli.common import flag_overrides, train_config
from charrnn.errors import ConfigError


def plan_cmd(
    config: Optional[Path] = typer.Argument(
        None, help="YAML config whose unset model and train keys are planned (default: none, "
                   "every key is planned).", show_default=False),
    data: Optional[str] = typer.Option(None, "--data", "-d",
                                       help="Training text: a file, a folder, a quoted glob "
                                            "pattern, or - for stdin (sets data.path)."),
    overrides: List[str] = typer.Option(
        [], "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Fix one config value (repeatable); the plan fits the rest around it."),
    max_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", help="The time budget (default: 10 minutes, unless --max-steps "
                                    "gives a step budget)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="A step budget."),
    device: Optional[str] = typer.Option(None, "--device",
                                         help="auto, cpu, cuda, cuda:N or mps (sets train.device)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix the CPU threads."),
    init_from: Optional[str] = typer.Option(
        None, "--init-from", metavar="RUN_DIR|CKPT",
        help="Plan a fine-tuning run: the model keys come from this checkpoint."),
    reprobe: bool = typer.Option(False, "--reprobe",
                                 help="Measure this machine's speed anew instead of reusing the "
                                      "cached measurement."),
    as_json: bool = typer.Option(False, "--json", help="The plan as JSON on stdout."),
) -> None:
    """Print the plan a run would follow (model, batch, dropout, lr, threads) and why; train
    nothing. Train it with the same options: charrnn train --data TEXT --max-minutes N

    Example: charrnn plan --data data/tinyshakespeare.txt --max-minutes 2
    """
    flags = {"--data": data, "--max-steps": max_steps, "--max-minutes": max_minutes,
             "--device": device, "--threads": threads}
    sets = flag_overrides(overrides, flags)
    if config is None and data is None:
        raise ConfigError("give --data TEXT (and a CONFIG whose unset keys are to be planned)")
    cfg, user_keys = train_config(config, sets, init_from)
    from charrnn.text.data import load_training_corpus
    from charrnn.device import resolve_device
    from charrnn.planning.planner import plan_run
    corpus = load_training_corpus(cfg)
    plan = plan_run(cfg, set(user_keys), train_chars=len(corpus.train),
                    text_chars=len(corpus.ids), vocab_size=len(corpus.vocab),
                    device=resolve_device(cfg.train.device), reprobe=reprobe)
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        typer.echo("\n".join(plan.describe()))
