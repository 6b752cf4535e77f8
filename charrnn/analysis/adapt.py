"""Dynamic evaluation (Krause et al., 2018): a model that keeps learning from a text while it
reads it.

The text is read window by window in a few long parallel streams, the hidden state carried.
Each window is scored first, with the weights as they are; then the model takes one gradient
step (plain SGD on the window's mean loss, in eval mode: no dropout) on that same window, and
its weights are pulled back towards the trained ones by `decay` (theta += decay * (theta_0 -
theta)), so what a passage teaches fades when the text moves on. A character is thus always
scored by a model that has learnt only from the characters before it, so the score is still a
fair prediction (and a code length: `charrnn compress --adapt` repeats these steps on both
sides).

The learning happens in a copy of the model: the caller's model, and the checkpoint it came
from, are never changed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from charrnn.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: the CLI reads this module's defaults for its --help.

# Measured by benchmarks/adapt.py on Tiny Shakespeare's held-out tenth with a 10-minute LSTM
# 2 x 256 (benchmarks/results/adapt-cpu2-2026-12-01.json; the README's eval section).
DEFAULT_LR = 0.07
DEFAULT_DECAY = 0.0
DEFAULT_WINDOW = 15
DEFAULT_STREAMS = 1


@dataclass(frozen=True)
class AdaptSettings:
    """How the model learns while it reads: SGD's learning rate, the decay towards the trained
    weights per step (0: none), the window length (characters per step) and the streams the
    text is cut into (fewer, longer streams: more steps)."""

    lr: float = DEFAULT_LR
    decay: float = DEFAULT_DECAY
    window: int = DEFAULT_WINDOW
    streams: int = DEFAULT_STREAMS

    def __post_init__(self):
        checks = [("lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a number > 0"),
                  ("decay", self.decay, math.isfinite(self.decay) and 0 <= self.decay < 1,
                   "a number from 0 up to (not including) 1"),
                  ("window", self.window, isinstance(self.window, int) and self.window >= 1,
                   "a whole number >= 1"),
                  ("streams", self.streams, isinstance(self.streams, int)
                   and 1 <= self.streams <= 1024, "a whole number from 1 to 1024")]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"--adapt-{name} must be {allowed}, got {value!r}")

    def as_dict(self) -> dict:
        return asdict(self)


class Adapter:
    """A copy of `model` that takes one SGD step (and the decay) per `learn(loss)`."""

    def __init__(self, model, settings: AdaptSettings):
        self.settings = settings
        self.model = copy.deepcopy(model).eval()  # the caller's model stays as it is
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.trained = [p.detach().clone() for p in self.params] if settings.decay else None

    @property
    def window(self) -> int:
        """Characters per stream between two learning steps."""
        return self.settings.window

    def learn(self, loss: "torch.Tensor") -> None:
        """One step down the gradient of `loss` (a scalar computed by `self.model`)."""
        import torch
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        with torch.no_grad():
            for k, (param, grad) in enumerate(zip(self.params, grads)):
                if grad is not None:
                    param.add_(grad, alpha=-self.settings.lr)
                if self.trained is not None:
                    param.add_(self.trained[k] - param, alpha=self.settings.decay)

    def learn_window(self, x: torch.Tensor, y: torch.Tensor, hidden, keep=None) -> None:
        """Read inputs `x` (B, T) from `hidden` and learn to predict `y` (B, T) where `keep`
        (B, T, bool; None: everywhere) allows."""
        import torch
        with torch.enable_grad():
            logits, _ = self.model(x, hidden)
            losses = window_losses(logits, y, keep)
            if losses.numel():
                self.learn(losses.mean())


def window_losses(logits: torch.Tensor, y: torch.Tensor, keep=None) -> torch.Tensor:
    """The cross-entropy of every kept target of a window, flat."""
    import torch.nn.functional as F
    losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                             reduction="none")
    return losses if keep is None else losses[keep.reshape(-1)]


def adaptive_loss(model, ids: torch.Tensor, device: torch.device,
                  settings: AdaptSettings) -> tuple[float, int]:
    """Mean cross-entropy (nats) of every predicted character of `ids` while the model learns
    from each window after scoring it, and their count. `model` is left unchanged."""
    import torch

    from charrnn.text.data import eval_windows
    from charrnn.models.family import map_hidden

    adapter = Adapter(model, settings)
    total, count, hidden = torch.zeros((), dtype=torch.float64, device=device), 0, None
    for x, y, valid in eval_windows(ids, settings.streams, settings.window):
        x, y = x.to(device), y.to(device)
        valid = valid.to(device) if valid is not None else None
        with torch.enable_grad():
            logits, after = adapter.model(x, hidden)
            losses = window_losses(logits, y, valid)
            total += losses.detach().sum().double()  # the score, before learning from it
            count += losses.numel()
            adapter.learn(losses.mean())
        hidden = map_hidden(torch.Tensor.detach, after)
    return (total.item() / count if count else float("nan")), count
