"""The training loop: truncated BPTT over contiguous streams, clipping, schedule, eval, checkpoints.

    from charrnn.config import load_config
    from charrnn.train import train
    result = train(load_config("configs/tiny.yaml"))

Nothing here prints: progress goes to the `on_event(kind, info)` callback the caller gives.
A batch, the learning rate and the data position are pure functions of the step, and the
checkpoint carries the model, optimizer, carried hidden state and RNG states, so a run resumed
from `last.pt` continues exactly as if it had never stopped.
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

from charrnn import finetune
from charrnn.checkpoint import (capture_rng, load_checkpoint, require_resumable,
                                resolve_checkpoint, save_checkpoint)
from charrnn.config import Config, config_from_dict, save_config
from charrnn.data import Corpus, StreamBatcher, load_training_corpus
from charrnn.device import (autocast, configure_precision, grad_scaler, resolve_precision,
                            seed_everything, set_threads)
from charrnn.distributed import Group, joined
from charrnn.errors import RunDirError, TrainingFailed
from charrnn.evaluate import validation_loss
from charrnn.models import (build_model, check_model_type, check_training_fits,
                            count_parameters, detach_hidden, map_hidden)
from charrnn.planner import plan_run
from charrnn.preview import Previewer, check_preview
from charrnn.resume import (best_of_branch, check_budget, check_not_behind,
                            check_resume_compatible, check_same_text, check_vocab,
                            text_fingerprint)
from charrnn.rundir import (METRICS_NAME, MetricsLog, RunLock, check_new_run, check_out_dir,
                            clear_run, run_dir_made, same_dir, start_branch)
from charrnn.schedule import Plan, describe, lr_at, replan
from charrnn.speed import Shape, choose_threads

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


def _make_optimizer(model, cfg) -> torch.optim.Optimizer:
    t = cfg.train
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _hidden_to(hidden, device):
    """The carried hidden state on `device` in fp32, whatever precision computed it: this is
    how checkpoints hold it, so a run saved under fp16 or bf16 resumes anywhere."""
    return map_hidden(lambda h: h.to(device, torch.float32), hidden)


def train(cfg: Config, *, resume: str | None = None, run_dir: str | None = None,
          force: bool = False, on_event: EventFn | None = None,
          should_stop: Callable[[], bool] | None = None,
          init_from: str | None = None, reprobe: bool = False,
          user_keys: frozenset[str] = frozenset()) -> TrainResult:
    """Train a model as `cfg` says; checkpoints go to the run directory.

    Under torchrun every process calls this, and they train one model together (see
    charrnn.distributed); rank 0 alone takes the run lock and writes.

    Args:
        resume: a run directory or checkpoint to continue (its `last.pt` by preference).
        run_dir: where to write; default the resumed run's folder, else `cfg.train.out_dir`.
        force: start over in a run directory that already holds checkpoints.
        init_from: a run or checkpoint whose weights a new run starts from (fine-tuning).
        reprobe: measure this machine's speed anew rather than reuse its cached measurement
            (where `train.threads` is null, the thread count is the fastest measured).
        user_keys: the `section.key`s the user set; with `train.plan`, a new run plans the
            others (charrnn.planner) and saves the planned config.
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
        state, changes, notes, start = None, [], [], None
        if group.main and new_dir:  # refused at once, before a large corpus is read; after
            check_new_run(out, force)  # the lock, so that a run in use is called so
        if checkpoint is not None:
            state = require_resumable(load_checkpoint(checkpoint))
            changes = check_resume_compatible(state["config"], cfg)
            if not new_dir and not force:
                check_not_behind(state, out)
            spent = check_budget(state, cfg)
            if spent:
                return TrainResult(out, state["step"], state.get("train_loss"),
                                   state.get("val_loss"), state.get("best_val_loss"), spent,
                                   state.get("elapsed_seconds", 0.0), finished_before=True)
        device = group.device
        precision = resolve_precision(cfg.train.precision, device)
        piped_before = state is not None and state["config"]["data"].get("path") == "-"
        corpus = load_training_corpus(cfg, piped_before=piped_before)
        if init_from is not None and state is None:
            start = finetune.prepare(init_from, cfg, corpus)
            corpus = start.corpus
            notes.append(start.note)
        if state is not None:
            corpus = finetune.widen(corpus, state["vocab"], cfg.data.val_fraction)
            check_vocab(state["vocab"], corpus.vocab, corpus.source)
        cfg, threads = _fitted(cfg, corpus, group, state is None, user_keys, reprobe, notes)
        # the ids move to the device once (1 byte per character), so no step copies a batch
        batcher = StreamBatcher(corpus.train.to(device), cfg.train.batch_size, cfg.train.seq_len)
        data = {**text_fingerprint(corpus.ids),
                "layout": {"batch_size": batcher.batch_size, "seq_len": batcher.seq_len,
                           "windows_per_pass": batcher.windows_per_pass}}
        if state is not None:
            warning = check_same_text(state, cfg, data, corpus.source)
            if warning:
                state["hidden"] = None
                notes.append(warning)

        def begin_writing() -> None:
            """Called once every input has been checked: only then is the folder changed."""
            if new_dir and force:
                clear_run(out)
            if new_dir and state is not None:  # a branch: its history up to the branch point
                start_branch(out, checkpoint, state["step"], best_of_branch(state))
            save_config(cfg, out / "config.yaml")

        return _run(cfg, out, corpus, batcher, data, state, group, precision, threads, emit,
                    should_stop, changes, notes, start.weights if start else None,
                    begin_writing if group.main else lambda: None)


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


def _run(cfg: Config, out: Path, corpus: Corpus, batcher: StreamBatcher, data: dict,
         state: dict | None, group: Group, precision: str, threads: int, emit: EventFn,
         should_stop: Callable[[], bool], changes: list[str], notes: list[str],
         init_weights: dict | None, begin_writing: Callable[[], None]) -> TrainResult:
    t, device, rows = cfg.train, group.device, group.rows(cfg.train.batch_size)
    seed_everything(t.seed)
    model = build_model(cfg.model, len(corpus.vocab))
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model.to(device)
    group.seed_rank(t.seed, 0)
    optimizer = _make_optimizer(model, cfg)
    configure_precision(precision, device)
    scaler = grad_scaler(device, precision)
    step, best, val_loss, hidden, elapsed_before = 0, None, None, None, 0.0
    window_loss, window_steps, bad_steps, plan, plan_note = 0.0, 0, 0, None, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for params in optimizer.param_groups:  # a resumed run may change these
            params["weight_decay"] = t.weight_decay
        step, best = state["step"], state.get("best_val_loss")
        val_loss = state.get("val_loss")
        hidden = _hidden_to(group.split_hidden(state.get("hidden"), t.batch_size), device)
        elapsed_before = state.get("elapsed_seconds", 0.0)
        window = state.get("train_window") or {"loss": 0.0, "steps": 0}
        window_loss, window_steps = window["loss"], window["steps"]
        bad_steps = state.get("skipped_steps", 0)
        changes = changes + group.restore_rng(state, t.seed, step, t.batch_size)
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        saved_plan = Plan.from_dict(state.get("schedule"))
        plan = replan(step, elapsed_before, config_from_dict(state["config"]), cfg, saved_plan)
        if plan != saved_plan:
            plan_note = describe(plan, cfg)
    forward = group.wrap(model)  # the model itself, or DDP around it
    begin_writing()
    resume_step = step if state is not None else None
    metrics, previewer = ((MetricsLog(out / METRICS_NAME, resume_step=resume_step),
                           Previewer(cfg, corpus.vocab, device, out, resume_step))
                          if group.main else (None, None))  # rank 0 alone logs
    emit("start", {"run_dir": str(out), "device": str(device), "threads": threads,
                   "model": cfg.model.type, "parameters": count_parameters(model),
                   "vocab_size": len(corpus.vocab), "train_chars": len(corpus.train),
                   "val_chars": len(corpus.val), "start_step": step, "max_steps": t.max_steps,
                   "resumed_from": state["path"] if state else None, "changes": changes,
                   "cached": corpus.cached, "max_minutes": t.max_minutes,
                   "elapsed": elapsed_before})
    for note in notes:  # a warning, unless given as an event of its own
        emit("note", note if isinstance(note, dict) else {"message": note})
    if plan_note:
        emit("note", {"message": plan_note, "warning": False})

    vocab_size, has_val = len(corpus.vocab), len(corpus.val) > 0
    val_ids = corpus.val.to(device)
    started = time.monotonic()
    # wall-clock start of the run, kept on resume: the default checkpoint is the newest run's
    run_started = state.get("run_started") if state is not None else time.time()
    elapsed = lambda: elapsed_before + time.monotonic() - started  # noqa: E731
    window_start, window_step0 = time.monotonic(), step
    train_loss, stopped_by, stop_reason = None, "max_steps", None
    last_saved = step if state is not None else -1

    def checkpoint(path_names: tuple[str, ...]) -> None:
        """Write the run's state; best.pt before last.pt, so that the best loss last.pt
        records is always one that best.pt holds, whenever a crash comes."""
        if not _all_finite(model):
            raise TrainingFailed(f"step {step}: the weights are no longer finite; nothing was "
                                 f"saved over the last good checkpoint (lower train.lr or set "
                                 f"train.grad_clip)")
        full_hidden = group.gather_hidden(hidden)  # every stream, from every rank
        rank_rng = group.gather_objects(capture_rng(device))
        if not group.main:
            return
        position = batcher.position(step)
        payload = {"config": cfg.to_dict(), "vocab": corpus.vocab.chars,
                   "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "step": step, "data_position": {"pass": position[0], "window": position[1],
                                                   "windows_per_pass": batcher.windows_per_pass},
                   "data": data, "hidden": full_hidden, "best_val_loss": best,
                   "val_loss": val_loss, "train_loss": train_loss, "elapsed_seconds": elapsed(),
                   "train_window": {"loss": window_loss, "steps": window_steps},
                   "skipped_steps": bad_steps, "schedule": plan.to_dict() if plan else None,
                   "run_started": run_started, "stopped_by": stop_reason,
                   "rng": rank_rng[0], "rank_rng": rank_rng, "world_size": group.world,
                   "scaler": scaler.state_dict()}
        for name in sorted(path_names):  # "best.pt" < "last.pt"
            save_checkpoint(payload, out / name)
            emit("save", {"path": str(out / name), "step": step})

    def evaluate() -> None:
        nonlocal val_loss, best
        if group.main:  # once, while the other ranks wait for its result
            val_loss, _ = validation_loss(model, val_ids, device, max_windows=t.eval_batches,
                                          precision=precision)
            metrics.write({"step": step, "val_loss": val_loss, "val_bpc": val_loss / math.log(2),
                           "time": round(elapsed(), 3)})
        val_loss = group.share(val_loss if group.main else 0.0)
        improved = best is None or val_loss < best
        best = val_loss if improved else best
        emit("eval", {"step": step, "val_loss": val_loss, "best_val_loss": best,
                      "improved": improved})
        checkpoint(("last.pt", "best.pt") if improved else ("last.pt",))

    def save() -> None:
        checkpoint(("last.pt",) if has_val else ("last.pt", "best.pt"))

    try:
        model.train()
        while step < t.max_steps:
            # a stop request and the clock (max_minutes, time-based lr), as all ranks agree
            stop_requested, clock = group.agree(should_stop(), elapsed())
            if stop_requested:
                stopped_by = "interrupt"
                break
            if t.max_minutes and clock >= t.max_minutes * 60:
                stopped_by = "max_minutes"
                break
            x, y, reset = batcher.batch(step)
            x, y = x[rows], y[rows]  # this rank's streams
            if reset:
                hidden = None
            lr = lr_at(step, cfg, clock, plan)
            for params in optimizer.param_groups:
                params["lr"] = lr
            with autocast(device, precision):
                logits, hidden = forward(x, hidden)
            loss = F.cross_entropy(logits.float().view(-1, vocab_size), y.view(-1))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # (fp16) so that clipping sees the true gradient
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
            loss_value, norm_value = group.mean(torch.stack([loss.detach(), norm.float()]))
            step += 1
            # under fp16 an overflowing gradient is the scaler's to handle: it skips that step
            if math.isfinite(loss_value) and (math.isfinite(norm_value) or scaler.is_enabled()):
                scaler.step(optimizer)
                scaler.update()
                hidden = detach_hidden(hidden)
                window_loss += loss_value
                window_steps += 1
            else:  # skipped; whatever log, eval or save is due at this step still happens
                scaler.update()
                bad_steps += 1
                if bad_steps > t.skip_nonfinite:
                    raise TrainingFailed(
                        f"step {step}: the loss or gradient is not finite ({loss_value}); "
                        f"training stopped and no checkpoint was overwritten (lower train.lr, "
                        f"set train.grad_clip, or allow skips with train.skip_nonfinite)")
                emit("note", {"message": f"step {step}: non-finite loss, step skipped "
                                         f"({bad_steps} of {t.skip_nonfinite} allowed)"})
                hidden = None
            if step == t.max_steps:  # the saves of this last step say why the run ends
                stop_reason = "max_steps"

            if (step % t.log_every == 0 or step == t.max_steps) and window_steps:
                now = time.monotonic()
                train_loss = window_loss / window_steps
                rate = ((step - window_step0) * t.batch_size * t.seq_len
                        / max(now - window_start, 1e-9))
                info = {"step": step, "train_loss": train_loss, "lr": lr,
                        "chars_per_sec": rate, "time": round(elapsed(), 3)}
                if group.main:
                    metrics.write(info)
                emit("step", {**info, "max_steps": t.max_steps})
                window_loss, window_steps, window_start, window_step0 = 0.0, 0, now, step
            if step % t.eval_every == 0 and has_val:
                evaluate()
                last_saved = step
            elif (t.save_every and step % t.save_every == 0) or (
                    not has_val and step % t.eval_every == 0):
                save()
                last_saved = step
            if group.main and previewer.due(step):
                emit("sample", previewer(model, step))
        stop_reason = stopped_by
        if step != last_saved:
            if window_steps:
                train_loss = window_loss / window_steps
            if has_val and stopped_by != "interrupt":
                evaluate()
            else:
                save()
        elif stopped_by != "max_steps":
            checkpoint(("last.pt",))  # the state is saved already: this records why it stopped
    finally:
        if group.main:
            metrics.close()
            previewer.close()
    return TrainResult(out, step, train_loss, val_loss, best, stopped_by, elapsed())
