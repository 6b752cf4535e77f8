"""The parts of a training step that stay on the device, so that a step never waits for the GPU.

A step's loss and gradient norm go into `Readings`, a buffer on the device that the host reads
once per `train.log_every` steps. Whether a step was finite is decided on the device too: the
optimizer is torch's fused AdamW / Adam, which skips its update (and undoes its step count) when
its `found_inf` flag is set, the protocol torch.amp.GradScaler drives it by. Under fp16 the
optimizer is the unfused one and the scaler decides from the gradients (reading its flag to
the host); a non-finite loss is then made a non-finite gradient (`guard_loss`), so that the
scaler skips its step too.
"""

from __future__ import annotations

import math

import torch

from charrnn.models import map_hidden


def make_optimizer(model: torch.nn.Module, cfg, scaled: bool) -> torch.optim.Optimizer:
    """AdamW (or Adam) as `cfg.train` says: fused, unless a loss scaler drives it (`scaled`),
    which reads its own overflow flag and skips `optimizer.step()` (torch's GradScaler)."""
    t = cfg.train
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
               fused=None if scaled else True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimizer state, keeping this optimizer's implementation (fused or not):
    a state saved by another one (an older charrnn, an fp16 run) is loaded into this one."""
    own = optimizer.param_groups
    groups = [{**g, "fused": o["fused"], "foreach": o["foreach"]}
              for g, o in zip(saved["param_groups"], own)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def gradient_norm(parameters, clip: float | None) -> torch.Tensor:
    """The gradients' total norm, on the device; clipped to `clip` unless it is None."""
    if clip is None:
        return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    return torch.nn.utils.clip_grad_norm_(parameters, clip)


def guard_loss(loss: torch.Tensor) -> torch.Tensor:
    """`loss`, whose gradient is NaN everywhere when it is not finite (and unchanged, bit for
    bit, when it is): so that a loss scaler, which looks only at the gradients, skips it."""
    return loss * torch.where(torch.isfinite(loss.detach()), 1.0, math.nan)


def skip_unless(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """Make the next `optimizer.step()` a no-op unless `finite` (a bool on the device): the
    fused optimizer's `found_inf`. A loss-scaled optimizer is not fused: its scaler decides."""
    if optimizer.param_groups[0]["fused"]:
        optimizer.found_inf = (~finite).float()


def carry(hidden, finite: torch.Tensor):
    """The hidden state the next step starts from: this one detached, or zeros (an empty state)
    after a step that was not finite."""
    return map_hidden(lambda h: torch.where(finite, h.detach(), 0.0), hidden)


# The most steps kept unread: the host reads at least this often, whatever train.log_every is.
MAX_UNREAD = 1000


class Readings:
    """Each step's (loss, gradient norm) on the device since the host last read them."""

    def __init__(self, capacity: int):
        self.capacity = max(1, min(capacity, MAX_UNREAD))
        self.buffer: torch.Tensor | None = None
        self.first = 0  # the step of the first row
        self.count = 0

    def add(self, step: int, values: torch.Tensor) -> None:
        """Keep step `step`'s (loss, norm) without reading them."""
        if self.buffer is None or self.buffer.device != values.device:
            self.buffer = torch.empty(self.capacity, 2, dtype=torch.float32,
                                      device=values.device)
        if self.count == 0:
            self.first = step
        self.buffer[self.count].copy_(values)
        self.count += 1

    @property
    def full(self) -> bool:
        return self.count == self.capacity

    def read(self) -> list[tuple[int, float, float]]:
        """(step, loss, norm) of every step kept, in order, in one read; empties the buffer."""
        if not self.count:
            return []
        rows = self.buffer[:self.count].tolist()
        self.count = 0
        return [(self.first + i, loss, norm) for i, (loss, norm) in enumerate(rows)]
