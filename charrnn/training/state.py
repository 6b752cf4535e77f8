"""What a training run carries from step to step, and the one place it becomes a checkpoint.

`TrainState.checkpoint` writes every key of a checkpoint that charrnn.checkpoint lists (a test
holds that list to it), and `TrainState.restore` with `Progress.read` reads them back, so the
keys and the defaults of checkpoints written before a key existed are kept in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from charrnn.checkpoint import capture_rng
from charrnn.training.device_step import Readings, load_optimizer_state
from charrnn.models import map_hidden
from charrnn.training.schedule import Plan

if TYPE_CHECKING:
    from charrnn.config import Config
    from charrnn.text.data import StreamBatcher
    from charrnn.training.distributed import Group
    from charrnn.text.vocab import Vocab


@dataclass
class Window:
    """The train losses summed since the last log line, and where its chars/sec rate starts."""

    loss: float = 0.0
    steps: int = 0
    start: float = field(default_factory=time.monotonic)  # not saved: a rate is per session
    step0: int = 0

    def mean(self) -> float:
        return self.loss / self.steps


@dataclass(kw_only=True)
class Progress:
    """How far a run has got; a key missing from an older checkpoint reads as the default here."""

    step: int = 0
    best_val_loss: Optional[float] = None
    val_loss: Optional[float] = None
    train_loss: Optional[float] = None  # of the last window logged
    elapsed_before: float = 0.0  # training seconds of the sessions before this one
    skipped_steps: int = 0  # non-finite steps skipped, over every session
    window: Window = field(default_factory=Window)
    plan: Optional[Plan] = None  # where a re-planned cosine starts (charrnn.training.schedule)
    run_started: Optional[float] = field(default_factory=time.time)  # kept on resume
    stopped_by: Optional[str] = None  # why the run ended; None while it trains

    @classmethod
    def read(cls, saved: dict) -> "Progress":
        """The progress a checkpoint records."""
        window = saved.get("train_window") or {"loss": 0.0, "steps": 0}
        return cls(step=saved["step"], best_val_loss=saved.get("best_val_loss"),
                   val_loss=saved.get("val_loss"), train_loss=saved.get("train_loss"),
                   elapsed_before=saved.get("elapsed_seconds", 0.0),
                   skipped_steps=saved.get("skipped_steps", 0),
                   window=Window(window["loss"], window["steps"], step0=saved["step"]),
                   plan=Plan.from_dict(saved.get("schedule")),
                   run_started=saved.get("run_started"), stopped_by=saved.get("stopped_by"))


@dataclass(kw_only=True)
class TrainState(Progress):
    """A run in training: its model, optimizer and loss scaler, the text it walks, the hidden
    state it carries, and its progress. The RNG states are torch's own, captured on saving."""

    cfg: Config
    vocab: Vocab
    batcher: StreamBatcher  # the data position is a function of the step
    data: dict  # fingerprint of the text and the window layout (charrnn.training.resume)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    hidden: Any = None  # this rank's carried hidden state
    readings: Readings = field(default_factory=lambda: Readings(1))  # the steps not yet read
    saved_step: int = -1  # the step last checkpointed (or resumed from)
    resumed_from: Optional[str] = None  # the checkpoint this session continues
    started: float = field(default_factory=time.monotonic)  # this session's clock

    def start_clock(self) -> None:
        self.started = time.monotonic()
        self.window.start, self.window.step0 = self.started, self.step

    def elapsed(self) -> float:
        """Training seconds of the whole run: every session's."""
        return self.elapsed_before + time.monotonic() - self.started

    def checkpoint(self, group: Group) -> dict | None:
        """The checkpoint of this state on rank 0, None on the others: the hidden state of every
        stream and the RNG states of every rank are gathered from all of them."""
        hidden = group.gather_hidden(self.hidden)
        rank_rng = group.gather_objects(capture_rng(group.device))
        if not group.main:
            return None
        passes, window = self.batcher.position(self.step)
        return {"config": self.cfg.to_dict(), "vocab": self.vocab.chars,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "data_position": {
                    "pass": passes, "window": window,
                    "windows_per_pass": self.batcher.windows_per_pass},
                "data": self.data, "hidden": hidden, "best_val_loss": self.best_val_loss,
                "val_loss": self.val_loss, "train_loss": self.train_loss,
                "elapsed_seconds": self.elapsed(),
                "train_window": {"loss": self.window.loss, "steps": self.window.steps},
                "skipped_steps": self.skipped_steps,
                "schedule": self.plan.to_dict() if self.plan else None,
                "run_started": self.run_started, "stopped_by": self.stopped_by,
                "rng": rank_rng[0], "rank_rng": rank_rng, "world_size": group.world,
                "scaler": self.scaler.state_dict()}

    def restore(self, saved: dict, group: Group) -> list[str]:
        """Continue from checkpoint `saved` (whatever world size wrote it); returns what a new
        world size changed. The train loss and stop reason are this session's: none yet."""
        t = self.cfg.train
        self.model.load_state_dict(saved["model"])
        load_optimizer_state(self.optimizer, saved["optimizer"])
        for params in self.optimizer.param_groups:  # a resumed run may change it
            params["weight_decay"] = t.weight_decay
        p = Progress.read(saved)
        self.step, self.best_val_loss, self.val_loss = p.step, p.best_val_loss, p.val_loss
        self.elapsed_before, self.skipped_steps, self.window = (p.elapsed_before,
                                                                p.skipped_steps, p.window)
        self.plan, self.run_started = p.plan, p.run_started
        self.saved_step, self.resumed_from = p.step, saved.get("path")
        self.hidden = _fp32_on(group.split_hidden(saved.get("hidden"), t.batch_size),
                               group.device)
        changes = group.restore_rng(saved, t.seed, self.step, t.batch_size)
        if self.scaler.is_enabled() and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        return changes


def _fp32_on(hidden, device):
    """A saved hidden state on `device` in fp32, the precision checkpoints hold it in, so that
    a run saved under fp16 or bf16 resumes under any precision."""
    return map_hidden(lambda h: h.to(device, torch.float32), hidden)
