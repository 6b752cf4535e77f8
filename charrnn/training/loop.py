"""The training loop: truncated BPTT over contiguous streams, clipping, schedule, eval, checkpoints.

    from charrnn.config import load_config
    from charrnn.training.loop import train
    result = train(load_config("configs/tiny.yaml"))

Nothing here prints: progress goes to the `on_event(kind, info)` callback the caller gives.
A batch, the learning rate and the data position are pure functions of the step, and the
checkpoint carries the model, optimizer, carried hidden state and RNG states (TrainState, in
charrnn.training.state), so a run resumed from `last.pt` continues exactly as if it had never
stopped. Each step of the loop is a function of its own (see `_steps`). Under fp32 and bf16 a
step reads nothing to the host: its loss and gradient norm stay on the device, a non-finite
step is skipped there (charrnn.training.device_step), and the host reads them once per
`train.log_every` steps. Under fp16, torch's GradScaler reads its overflow flag at each step.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from charrnn.training import finetune
from charrnn.checkpoint import (load_checkpoint, require_resumable, resolve_checkpoint,
                                save_checkpoint)
from charrnn.config import Config, config_from_dict, save_config
from charrnn.text.data import Corpus, StreamBatcher, load_training_corpus, widen
from charrnn.text.fingerprint import text_fingerprint
from charrnn.device import (autocast, configure_precision, grad_scaler, resolve_precision,
                            seed_everything, set_threads)
from charrnn.training.device_step import (Readings, carry, gradient_norm, guard_loss, make_optimizer,
                                 skip_unless)
from charrnn.training.distributed import Group, joined
from charrnn.errors import RunDirError, TrainingFailed
from charrnn.analysis.evaluate import validation_loss
from charrnn.models import build_model, check_model_type, check_training_fits, count_parameters
from charrnn.planning.planner import plan_run
from charrnn.training.preview import Previewer, check_preview
from charrnn.training.resume import (best_of_branch, check_budget, check_not_behind,
                            check_resume_compatible, check_same_text, check_vocab,
                            inexact_resume)
from charrnn.training.rundir import (METRICS_NAME, MetricsLog, RunLock, check_new_run, check_out_dir,
                            clear_run, run_dir_made, same_dir, start_branch)
from charrnn.training.schedule import describe, lr_at, replan
from charrnn.planning.speed import Shape, choose_threads
from charrnn.training.state import Progress, TrainState, Window
from charrnn.text.vocab import Vocab

EventFn = Callable[[str, dict], None]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: Optional[float]
    val_loss: Optional[float]
    best_val_loss: Optional[float]
    stopped_by: str  # "max_steps", "max_minutes" or "interrupt"
    elapsed_seconds: float
    finished_before: bool = False  # a resumed run whose budget was already spent: nothing done


def config_from_checkpoint(path: str, overrides: list[str] = ()) -> Config:
    """The config a run was trained with, with `--set` overrides applied (for --resume alone)."""
    state = require_resumable(load_checkpoint(resolve_checkpoint(path, prefer="last")))
    return config_from_dict(state["config"], source=f"{state['path']} (config)",
                            overrides=list(overrides))


def _all_finite(model) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def train(cfg: Config, *, resume: str | None = None, run_dir: str | None = None,
          force: bool = False, on_event: EventFn | None = None,
          should_stop: Callable[[], bool] | None = None,
          init_from: str | None = None, reprobe: bool = False,
          user_keys: frozenset[str] = frozenset()) -> TrainResult:
    """Train a model as `cfg` says; checkpoints go to the run directory.

    Under torchrun every process calls this, and they train one model together (see
    charrnn.training.distributed); rank 0 alone takes the run lock and writes.

    Args:
        resume: a run directory or checkpoint to continue (its `last.pt` by preference).
        run_dir: where to write; default the resumed run's folder, else `cfg.train.out_dir`.
        force: start over in a run directory that already holds checkpoints.
        init_from: a run or checkpoint whose weights a new run starts from (fine-tuning).
        reprobe: measure this machine's speed anew rather than reuse its cached measurement
            (where `train.threads` is null, the thread count is the fastest measured).
        user_keys: the `section.key`s the user set; with `train.plan`, a new run plans the
            others (charrnn.planning.planner) and saves the planned config.
        on_event: receives ("start" | "step" | "eval" | "save" | "sample" | "note", info dict).
        should_stop: polled between steps; when it returns True, `last.pt` is written and the
            result says `stopped_by="interrupt"`.
    """
    check_model_type(cfg.model.type)
    with joined(cfg.train.device, cfg.train.batch_size) as group:
        return _train(cfg, group, resume, run_dir, force, on_event or (lambda kind, info: None),
                      should_stop or (lambda: False), init_from, reprobe, user_keys)


def _train(cfg: Config, group: Group, resume: str | None, run_dir: str | None, force: bool,
           emit: EventFn, should_stop: Callable[[], bool], init_from: str | None,
           reprobe: bool = False, user_keys: frozenset[str] = frozenset()) -> TrainResult:
    checkpoint = resolve_checkpoint(resume, prefer="last") if resume is not None else None
    out = Path(run_dir or (checkpoint.parent if checkpoint else cfg.train.out_dir))
    cfg = replace(cfg, train=replace(cfg.train, out_dir=str(out)))
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory")
    # a new run, or a branch of a resumed one into a folder of its own
    new_dir = checkpoint is None or not same_dir(out, checkpoint.parent)
    # rank 0 alone checks, creates, locks and writes the run directory; every input is checked
    # before anything in it is changed, so a refused run leaves the old one as it was
    if group.main and new_dir:
        check_out_dir(out, cfg.data.path)
    with run_dir_made(out) if group.main else nullcontext(), \
            RunLock(out) if group.main else nullcontext():  # before anything of the run is read
        if group.main and new_dir:  # refused at once, before a large corpus is read; after
            check_new_run(out, force)  # the lock, so that a run in use is called so
        saved, changes, spent = _continued(checkpoint, cfg, out, new_dir, force)
        if spent:
            return _finished_before(saved, spent, out)
        precision = resolve_precision(cfg.train.precision, group.device)
        notes = []
        corpus, init_weights = _training_text(cfg, saved, init_from, notes)
        cfg, threads = _fitted(cfg, corpus, group, saved is None, user_keys, reprobe, notes)
        batcher, data = _batches(cfg, corpus, group.device)
        if saved is not None:
            warning = check_same_text(saved, cfg, data, corpus.source)
            if warning:
                saved["hidden"] = None
                notes.append(warning)
        state = _new_state(cfg, corpus.vocab, batcher, data, group, precision, init_weights)
        if saved is not None:
            changes = changes + _resume(state, saved, group, notes)
        forward = group.wrap(state.model)  # the model itself, or DDP around it
        if group.main:  # every input is checked: only now is the folder changed
            _begin_writing(cfg, out, checkpoint, saved, new_dir, force)
        session = _Session.open(state, out, corpus, group, precision, forward, emit, should_stop)
        _announce(session, state, corpus, threads, changes, notes)
        return _run(session, state)


def _continued(checkpoint: Path | None, cfg: Config, out: Path, new_dir: bool,
               force: bool) -> tuple[dict | None, list[str], str | None]:
    """The checkpoint a run continues (None: a new run), the config changes it makes, and the
    budget it has already spent ("max_steps" or "max_minutes": nothing to do), if any."""
    if checkpoint is None:
        return None, [], None
    saved = require_resumable(load_checkpoint(checkpoint))
    changes = check_resume_compatible(saved["config"], cfg)
    if not new_dir and not force:
        check_not_behind(saved, out)
    return saved, changes, check_budget(saved, cfg)


def _finished_before(saved: dict, spent: str, out: Path) -> TrainResult:
    done = Progress.read(saved)
    return TrainResult(out, done.step, done.train_loss, done.val_loss, done.best_val_loss,
                       spent, done.elapsed_before, finished_before=True)


def _training_text(cfg: Config, saved: dict | None, init_from: str | None,
                   notes: list) -> tuple[Corpus, dict | None]:
    """The corpus to train on, widened to a resumed or fine-tuned model's vocab, and the
    weights a fine-tuned run starts from."""
    piped_before = saved is not None and saved["config"]["data"].get("path") == "-"
    corpus = load_training_corpus(cfg, piped_before=piped_before)
    if init_from is not None and saved is None:
        start = finetune.prepare(init_from, cfg, corpus)
        notes.append(start.note)
        return start.corpus, start.weights
    if saved is not None:
        corpus = widen(corpus, saved["vocab"], cfg.data.val_fraction)
        check_vocab(saved["vocab"], corpus.vocab, corpus.source)
    return corpus, None


def _batches(cfg: Config, corpus: Corpus, device: torch.device) -> tuple[StreamBatcher, dict]:
    """The training windows, and the record of the text and their layout a checkpoint keeps.
    The ids move to the device once (1 byte per character), so no step copies a batch."""
    batcher = StreamBatcher(corpus.train.to(device), cfg.train.batch_size, cfg.train.seq_len)
    data = {**text_fingerprint(corpus.ids),
            "layout": {"batch_size": batcher.batch_size, "seq_len": batcher.seq_len,
                       "windows_per_pass": batcher.windows_per_pass}}
    return batcher, data


def _fitted(cfg: Config, corpus: Corpus, group: Group, new_run: bool,
            user_keys: frozenset[str], reprobe: bool, notes: list) -> tuple[Config, int]:
    """The config fitted to this text and machine, and the CPU threads it trains with: the
    memory check (before any model of these sizes is built, the probe's included), the plan
    (a new run's only: a resume never plans again), the measured threads, the preview prime."""
    def fits() -> None:
        check_training_fits(cfg, len(corpus.vocab), cfg.train.batch_size // group.world,
                            group.device)

    fits()
    if cfg.train.plan and new_run:
        cfg = _planned(cfg, corpus, group, user_keys, reprobe, notes)
        fits()
    threads = group.cpu_threads(cfg.train.threads)
    if threads is None and group.device.type == "cpu":  # null: the count measured fastest
        choice = choose_threads(Shape.of(cfg, len(corpus.vocab)), reprobe=reprobe)
        threads = choice.threads
        notes.append({"message": f"threads: {choice.describe()}", "warning": False})
    check_preview(cfg, corpus.vocab)
    return cfg, set_threads(threads)


def _planned(cfg: Config, corpus: Corpus, group: Group, user_keys: frozenset[str],
             reprobe: bool, notes: list) -> Config:
    """The config planned for this text, device and budget: rank 0 plans, every rank uses it."""
    plan = None
    if group.main:  # under torchrun each rank takes its share of the cores, not a planned count
        fixed = set(user_keys) | ({"train.threads"} if group.launched else set())
        plan = plan_run(cfg, fixed, train_chars=len(corpus.train),
                        text_chars=len(corpus.ids), vocab_size=len(corpus.vocab),
                        device=group.device, reprobe=reprobe)
        notes.append({"message": "\n".join(plan.describe()), "warning": False})
    return group.share_object(plan.config if plan else None)


def _new_state(cfg: Config, vocab: Vocab, batcher: StreamBatcher, data: dict, group: Group,
               precision: str, init_weights: dict | None) -> TrainState:
    """A run at step 0: the model seeded (or fine-tuned from `init_weights`) and its optimizer."""
    t, device = cfg.train, group.device
    seed_everything(t.seed, device)
    model = build_model(cfg.model, len(vocab))
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model.to(device)
    group.seed_rank(t.seed, 0)
    scaler = grad_scaler(device, precision)
    optimizer = make_optimizer(model, cfg, scaled=scaler.is_enabled())
    configure_precision(precision, device)
    return TrainState(cfg=cfg, vocab=vocab, batcher=batcher, data=data, model=model,
                      optimizer=optimizer, scaler=scaler, readings=Readings(t.log_every))


def _resume(state: TrainState, saved: dict, group: Group, notes: list) -> list[str]:
    """Continue `state` from `saved`, re-planning the schedule if its budget changed (noted);
    returns what a new world size changed."""
    changes = state.restore(saved, group)
    plan = replan(state.step, state.elapsed_before, config_from_dict(saved["config"]),
                  state.cfg, state.plan)
    if plan != state.plan:
        notes.append({"message": describe(plan, state.cfg), "warning": False})
    state.plan = plan
    notes.extend({"message": m, "warning": True} for m in inexact_resume(group.device, state.cfg))
    return changes


def _begin_writing(cfg: Config, out: Path, checkpoint: Path | None, saved: dict | None,
                   new_dir: bool, force: bool) -> None:
    if new_dir and force:
        clear_run(out)
    if new_dir and saved is not None:  # a branch: its history up to the branch point
        start_branch(out, checkpoint, saved["step"], best_of_branch(saved))
    save_config(cfg, out / "config.yaml")


@dataclass
class _Session:
    """What the steps of one training session read and never change."""

    cfg: Config
    out: Path
    group: Group
    precision: str
    forward: torch.nn.Module  # the model, or DDP around it
    emit: EventFn
    should_stop: Callable[[], bool]
    rows: slice  # this rank's streams
    vocab_size: int
    val_ids: torch.Tensor
    metrics: Optional[MetricsLog]  # rank 0 alone logs: None on the others
    previewer: Optional[Previewer]

    @classmethod
    def open(cls, state: TrainState, out: Path, corpus: Corpus, group: Group, precision: str,
             forward: torch.nn.Module, emit: EventFn,
             should_stop: Callable[[], bool]) -> "_Session":
        cfg, device = state.cfg, group.device
        resume_step = state.step if state.resumed_from else None
        metrics, previewer = ((MetricsLog(out / METRICS_NAME, resume_step, cfg.train.log_to),
                               Previewer(cfg, corpus.vocab, device, out, resume_step))
                              if group.main else (None, None))
        return cls(cfg, out, group, precision, forward, emit, should_stop,
                   group.rows(cfg.train.batch_size), len(corpus.vocab), corpus.val.to(device),
                   metrics, previewer)

    @property
    def has_val(self) -> bool:
        return len(self.val_ids) > 0

    def close(self) -> None:
        if self.group.main:
            self.metrics.close()
            self.previewer.close()


def _announce(session: _Session, state: TrainState, corpus: Corpus, threads: int,
              changes: list[str], notes: list) -> None:
    t = state.cfg.train
    session.emit("start", {
        "run_dir": str(session.out), "device": str(session.group.device), "threads": threads,
        "model": state.cfg.model.type, "parameters": count_parameters(state.model),
        "vocab_size": len(corpus.vocab), "train_chars": len(corpus.train),
        "val_chars": len(corpus.val), "start_step": state.step, "max_steps": t.max_steps,
        "resumed_from": state.resumed_from, "changes": changes, "cached": corpus.cached,
        "max_minutes": t.max_minutes, "elapsed": state.elapsed_before})
    for note in notes:  # a warning, unless given as an event of its own
        session.emit("note", note if isinstance(note, dict) else {"message": note})


def _run(session: _Session, state: TrainState) -> TrainResult:
    """Train until the budget is spent or a stop is asked for; then save how the run ended."""
    state.start_clock()
    try:
        state.model.train()
        stopped_by = _steps(session, state)
        _finish(session, state, stopped_by)
    finally:
        session.close()
    return TrainResult(session.out, state.step, state.train_loss, state.val_loss,
                       state.best_val_loss, stopped_by, state.elapsed())


def _steps(session: _Session, state: TrainState) -> str:
    """The training steps, until the budget ends them or a stop is asked for: returns which."""
    t = session.cfg.train
    while state.step < t.max_steps:
        stop, clock = _stop_or_clock(session, state)
        if stop:
            return stop
        x, y = _next_batch(session, state)
        lr = _train_step(session, state, x, y, clock)
        if state.step == t.max_steps:  # the saves of this last step say why the run ends
            state.stopped_by = "max_steps"
        _maybe_log(session, state, lr)
        if not _maybe_evaluate(session, state):  # an evaluation saves too
            _maybe_save(session, state)
        _maybe_sample(session, state)
    return "max_steps"


def _stop_or_clock(session: _Session, state: TrainState) -> tuple[str | None, float]:
    """Why the run stops before this step (a request, the time budget), or None; and the clock
    behind max_minutes and a time-based lr. Every rank agrees on both (under torchrun, every
    AGREE_EVERY steps: charrnn.training.distributed)."""
    t = session.cfg.train
    stop_requested, clock = session.group.agree(session.should_stop(), state.elapsed(),
                                                state.step)
    if stop_requested:
        return "interrupt", clock
    if t.max_minutes and clock >= t.max_minutes * 60:
        return "max_minutes", clock
    return None, clock


def _next_batch(session: _Session, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the step's window; a new pass starts from an empty hidden state."""
    x, y, reset = state.batcher.batch(state.step)
    if reset:
        state.hidden = None
    return x[session.rows], y[session.rows]


def _train_step(session: _Session, state: TrainState, x: torch.Tensor, y: torch.Tensor,
                clock: float) -> float:
    """Forward, backward and clip on one batch, then the update (or a skip); returns the lr.
    Nothing here reads a value to the host: the loss and gradient norm are kept on the device."""
    t, optimizer, scaler = session.cfg.train, state.optimizer, state.scaler
    lr = lr_at(state.step, session.cfg, clock, state.plan)
    for params in optimizer.param_groups:
        params["lr"] = lr
    with autocast(session.group.device, session.precision):
        logits, state.hidden = session.forward(x, state.hidden)
    loss = F.cross_entropy(logits.float().view(-1, session.vocab_size), y.view(-1))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(guard_loss(loss) if scaler.is_enabled() else loss).backward()
    scaler.unscale_(optimizer)  # (fp16) so that clipping sees the true gradient
    norm = gradient_norm(state.model.parameters(), t.grad_clip)
    values = session.group.average(torch.stack([loss.detach(), norm.float()]))
    state.step += 1
    _update(session, state, values)
    return lr


def _update(session: _Session, state: TrainState, values: torch.Tensor) -> None:
    """Take the optimizer step, skipped on the device when the loss or gradient is not finite;
    the host hears of it at the next read (`_read_steps`)."""
    scaler = state.scaler
    # under fp16 an overflowing gradient is the scaler's to handle: it skips that step
    finite = torch.isfinite(values[0] if scaler.is_enabled() else values).all()
    skip_unless(state.optimizer, finite)
    scaler.step(state.optimizer)
    scaler.update()
    state.hidden = carry(state.hidden, finite)
    state.readings.add(state.step, values)
    if state.readings.full:
        _read_steps(session, state)


def _read_steps(session: _Session, state: TrainState) -> None:
    """Read the steps' losses since the last read: the finite ones go into the log window, a
    skipped one is said (failing beyond train.skip_nonfinite skips, before anything is saved)."""
    t, scaled = session.cfg.train, state.scaler.is_enabled()
    for step, loss, norm in state.readings.read():
        if math.isfinite(loss) and (math.isfinite(norm) or scaled):
            state.window.loss += loss
            state.window.steps += 1
            continue
        state.skipped_steps += 1
        if state.skipped_steps > t.skip_nonfinite:
            raise TrainingFailed(
                f"step {step}: the loss or gradient is not finite ({loss}); training stopped "
                f"and no checkpoint was overwritten (lower train.lr, set train.grad_clip, or "
                f"allow skips with train.skip_nonfinite)")
        session.emit("note", {"message": f"step {step}: non-finite loss, step skipped "
                                         f"({state.skipped_steps} of {t.skip_nonfinite} "
                                         f"allowed)"})


def _maybe_log(session: _Session, state: TrainState, lr: float) -> None:
    """Every log_every steps and at the last: the window's mean train loss and speed."""
    t = session.cfg.train
    if not (state.step % t.log_every == 0 or state.step == t.max_steps):
        return
    _read_steps(session, state)
    window = state.window
    if not window.steps:
        return
    now = time.monotonic()
    state.train_loss = window.mean()
    rate = ((state.step - window.step0) * t.batch_size * t.seq_len
            / max(now - window.start, 1e-9))
    info = {"step": state.step, "train_loss": state.train_loss, "lr": lr,
            "chars_per_sec": rate, "time": round(state.elapsed(), 3)}
    if session.group.main:
        session.metrics.write(info)
    session.emit("step", {**info, "max_steps": t.max_steps})
    state.window = Window(start=now, step0=state.step)


def _maybe_evaluate(session: _Session, state: TrainState) -> bool:
    """Every eval_every steps, where there is a validation text; says whether it did."""
    if not (state.step % session.cfg.train.eval_every == 0 and session.has_val):
        return False
    _evaluate(session, state)
    return True


def _maybe_save(session: _Session, state: TrainState) -> None:
    """Every save_every steps; every eval_every steps where there is no validation text."""
    t, step = session.cfg.train, state.step
    if (t.save_every and step % t.save_every == 0) or (
            not session.has_val and step % t.eval_every == 0):
        _save(session, state)


def _maybe_sample(session: _Session, state: TrainState) -> None:
    if session.group.main and session.previewer.due(state.step):
        session.emit("sample", session.previewer(state.model, state.step))


def _evaluate(session: _Session, state: TrainState) -> None:
    """The validation loss (rank 0 scores, the others wait for it), logged and saved: best.pt
    too when it is the best so far."""
    group, t = session.group, session.cfg.train
    _read_steps(session, state)  # a run that must stop stops before it is evaluated
    val_loss = 0.0
    if group.main:
        val_loss, _ = validation_loss(state.model, session.val_ids, group.device,
                                      max_windows=t.eval_batches, precision=session.precision)
        session.metrics.write({"step": state.step, "val_loss": val_loss,
                               "val_bpc": val_loss / math.log(2),
                               "time": round(state.elapsed(), 3)})
    state.val_loss = group.share(val_loss)
    improved = state.best_val_loss is None or state.val_loss < state.best_val_loss
    if improved:
        state.best_val_loss = state.val_loss
    session.emit("eval", {"step": state.step, "val_loss": state.val_loss,
                          "best_val_loss": state.best_val_loss, "improved": improved})
    _checkpoint(session, state, ("last.pt", "best.pt") if improved else ("last.pt",))


def _save(session: _Session, state: TrainState) -> None:
    """last.pt; without a validation text, best.pt too (the newest is the best known)."""
    _checkpoint(session, state, ("last.pt",) if session.has_val else ("last.pt", "best.pt"))


def _checkpoint(session: _Session, state: TrainState, names: tuple[str, ...]) -> None:
    """Write the run's state; best.pt before last.pt, so that the best loss last.pt records is
    always one that best.pt holds, whenever a crash comes."""
    _read_steps(session, state)  # its log window and skip count; a run that must stop stops
    if not _all_finite(state.model):
        raise TrainingFailed(f"step {state.step}: the weights are no longer finite; nothing was "
                             f"saved over the last good checkpoint (lower train.lr or set "
                             f"train.grad_clip)")
    payload = state.checkpoint(session.group)
    state.saved_step = state.step
    if payload is None:  # another rank's: rank 0 writes
        return
    for name in sorted(names):  # "best.pt" < "last.pt"
        save_checkpoint(payload, session.out / name)
        session.emit("save", {"path": str(session.out / name), "step": state.step})


def _finish(session: _Session, state: TrainState, stopped_by: str) -> None:
    """Save what the last save missed (evaluated, unless interrupted), or why the run stopped."""
    state.stopped_by = stopped_by
    _read_steps(session, state)
    if state.step != state.saved_step:
        if state.window.steps:
            state.train_loss = state.window.mean()
        if session.has_val and stopped_by != "interrupt":
            _evaluate(session, state)
        else:
            _save(session, state)
    elif stopped_by != "max_steps":
        _checkpoint(session, state, ("last.pt",))  # saved already: this records why it stopped
