"""`charrnn tune`: search around the plan under a wall-clock budget, by successive halving.

Trial 0 is the plan itself, run in full, so the best found is never worse than the plan as
measured. Each further trial takes a point near the plan (Optuna's TPE sampler) and trains it
for the length of run being tuned for, reporting its validation loss at every evaluation;
Optuna's successive-halving pruner stops the worse ones early, so many short trials are tried
and the better ones continued. Every trial is a whole `charrnn` run, scored the way a run is.

The study lives in a database: an SQLite file in the tune folder by default, so the same command
again resumes it, or any URL Optuna takes (`--storage postgresql://...`), so that workers on
several machines each run their own trials of one study. Trials run one at a time per process.
"""

from __future__ import annotations

import importlib
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from charrnn.config import Config, save_config
from charrnn.errors import ConfigError, MissingDependency
from charrnn.planning.planner import get_key as _get, set_key as _set

INSTALL_HINT = "pip install 'charrnn[tune]'"
SEARCHED = ("model.num_layers", "model.hidden_size", "model.dropout", "train.batch_size",
            "train.lr")
STUDY_FILE = "study.db"
BEST_CONFIG = "best.yaml"


def require_optuna():
    try:
        optuna = importlib.import_module("optuna")
    except ImportError:
        raise MissingDependency(f"optuna is not installed; install the tuning extra with: "
                                f"{INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class TuneResult:
    """What a search found: the best trial's config and the table of every trial."""

    tune_dir: Path
    best_config: Config | None
    best_loss: float | None
    best_trial: int | None
    trials: list[dict]
    interrupted: bool

    def to_dict(self) -> dict:
        return {"tune_dir": str(self.tune_dir), "best_trial": self.best_trial,
                "best_val_loss": self.best_loss, "interrupted": self.interrupted,
                "best_config": str(self.tune_dir / BEST_CONFIG) if self.best_config else None,
                "trials": self.trials}


def search_start(cfg: Config, user_keys) -> tuple[Any, set[str], int]:
    """Where a search starts: the plan for `cfg`'s text, device and trial minutes (a
    charrnn.planning Plan), the keys it keeps fixed (those the user set), and the number of
    training characters."""
    from charrnn.device import resolve_device
    from charrnn.planning.planner import plan_run
    from charrnn.text.data import load_training_corpus
    corpus = load_training_corpus(cfg)
    fixed = set(user_keys) - {"train.max_minutes", "train.plan"}
    plan = plan_run(cfg, fixed | {"train.max_minutes"}, train_chars=len(corpus.train),
                    text_chars=len(corpus.ids), vocab_size=len(corpus.vocab),
                    device=resolve_device(cfg.train.device))
    return plan, fixed, len(corpus.train)


def search_space(trial, base: Config, fixed: set[str], train_chars: int) -> dict[str, Any]:
    """A point near the plan `base`: half to twice its width, 1 to 3 layers, batch 8 to 64
    (as the text allows), dropout 0 to 0.5, lr a third to three times the plan's."""
    hidden, lr = base.model.hidden_size, base.train.lr
    seq_len = base.train.seq_len
    batches = [b for b in (8, 16, 32, 64) if b * seq_len + 1 <= train_chars] or [1]
    space = {
        "model.num_layers": lambda: trial.suggest_int("model.num_layers", 1, 3),
        "model.hidden_size": lambda: trial.suggest_categorical(
            "model.hidden_size", sorted({max(32, hidden // 2), hidden, hidden * 2})),
        "model.dropout": lambda: trial.suggest_float("model.dropout", 0.0, 0.5, step=0.1),
        "train.batch_size": lambda: trial.suggest_categorical("train.batch_size", batches),
        "train.lr": lambda: trial.suggest_float("train.lr", lr / 3, lr * 3, log=True),
    }
    return {key: suggest() for key, suggest in space.items() if key not in fixed}


def tune(base: Config, fixed: set[str], tune_dir: Path, *, budget_minutes: float,
         trial_minutes: float, train_chars: int, storage: str | None = None,
         study_name: str = "charrnn", seed: int = 0,
         on_trial: Callable[[dict], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> TuneResult:
    """Search around the planned config `base` (keys in `fixed` stay) for `budget_minutes`,
    each trial a run of `trial_minutes`; the best config goes to tune_dir/best.yaml and its
    run to tune_dir/best/."""
    optuna = require_optuna()
    from charrnn.training.loop import train
    if trial_minutes > budget_minutes:
        raise ConfigError(f"--max-minutes {trial_minutes:g} is more than the whole budget "
                          f"({budget_minutes:g} minutes): one trial would not fit")
    study = _open_study(optuna, tune_dir, storage, study_name, seed, base, fixed)
    deadline = time.monotonic() + budget_minutes * 60
    stop = should_stop or (lambda: False)
    interrupted = {"value": False}

    def objective(trial) -> float:
        minutes = min(trial_minutes, (deadline - time.monotonic()) / 60)
        out = tune_dir / "trials" / f"{trial.number:03d}"
        cfg = _trial_config(search_space(trial, base, fixed, train_chars), base, minutes, out)
        pruned, started = {"value": False}, time.monotonic()

        def on_event(kind: str, info: dict) -> None:
            if kind == "eval" and info.get("val_loss") is not None:  # per mille of the trial
                progress = int(1000 * (time.monotonic() - started) / (minutes * 60))
                trial.report(info["val_loss"], progress)
                pruned["value"] = trial.should_prune()

        def halt() -> bool:
            if stop():
                interrupted["value"] = True
            return interrupted["value"] or pruned["value"]

        result = train(cfg, run_dir=str(out), force=True, on_event=on_event, should_stop=halt)
        trial.set_user_attr("steps", result.step)
        trial.set_user_attr("minutes", round(result.elapsed_seconds / 60, 3))
        trial.set_user_attr("run_dir", str(out))
        if interrupted["value"]:
            study.stop()
            raise optuna.TrialPruned("interrupted")
        if pruned["value"]:
            shutil.rmtree(out, ignore_errors=True)  # only the finished trials' runs are kept
            raise optuna.TrialPruned(f"pruned at step {result.step}")
        loss = result.best_val_loss
        return loss if loss is not None and math.isfinite(loss) else float("inf")

    def after_trial(study_, frozen) -> None:
        if on_trial is not None:
            on_trial(_row(frozen))
        if interrupted["value"] or deadline - time.monotonic() < trial_minutes * 30:
            study_.stop()  # less than half a trial left: stop rather than start one

    try:
        study.optimize(objective, timeout=max(1.0, deadline - time.monotonic()),
                       callbacks=[after_trial], catch=())
    except KeyboardInterrupt:
        interrupted["value"] = True
    return _finish(study, tune_dir, base, fixed, interrupted["value"])


def _open_study(optuna, tune_dir: Path, storage: str | None, study_name: str, seed: int,
                base: Config, fixed: set[str]):
    """The study, created or resumed; a new one starts with the plan itself as its first trial,
    run in full, so the search can only improve on it."""
    tune_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name, direction="minimize", load_if_exists=True,
        storage=storage or f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=100, reduction_factor=3))
    if not study.trials:
        study.enqueue_trial({k: _get(base, k) for k in SEARCHED if k not in fixed},
                            user_attrs={"plan": True})
    return study


def _trial_config(params: dict[str, Any], base: Config, minutes: float, out: Path) -> Config:
    """The planned config with a trial's values, its time budget and its own run folder."""
    cfg = base
    for key, value in params.items():
        cfg = _set(cfg, key, value)
    cfg = _set(_set(cfg, "train.max_minutes", minutes), "train.plan", False)
    return _set(cfg, "train.out_dir", str(out))


def _row(frozen) -> dict:
    return {"trial": frozen.number, "state": frozen.state.name.lower(),
            "val_loss": frozen.value, "plan": bool(frozen.user_attrs.get("plan")),
            "steps": frozen.user_attrs.get("steps"), "minutes": frozen.user_attrs.get("minutes"),
            "params": dict(frozen.params)}


def _finish(study, tune_dir: Path, base: Config, fixed: set[str],
            interrupted: bool) -> TuneResult:
    """Keep the best trial's run and config; the table of every trial."""
    rows = [_row(t) for t in study.trials]
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return TuneResult(tune_dir, None, None, None, rows, interrupted)
    best = min(done, key=lambda t: t.value)
    cfg = _trial_config(best.params, base, base.train.max_minutes, tune_dir / "best")
    save_config(cfg, tune_dir / BEST_CONFIG)
    run = Path(best.user_attrs.get("run_dir", ""))
    if run.is_dir() and run != tune_dir / "best":
        shutil.rmtree(tune_dir / "best", ignore_errors=True)
        shutil.copytree(run, tune_dir / "best")
    return TuneResult(tune_dir, cfg, best.value, best.number, rows, interrupted)
