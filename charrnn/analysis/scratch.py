"""A model that starts from nothing and learns as it reads: `charrnn compress --scratch`.

The file alone is enough to decompress: both sides build the same model from the same seed,
code each window of characters under its predictions, then take the same optimizer step on
that window, so their weights stay identical. What the decoder must repeat (the family and its
sizes, the optimizer and its settings, the seed, the stream layout, the alphabet, the charrnn
and torch versions) is written into the file as a `ScratchPlan` and the alphabet.

A model that learns while it reads pays for its first mistakes, so the plan is made for one
pass over the text: a small model, a small batch (few streams, short windows: many updates)
and a learning rate high enough to learn in one pass (NNCP's notes say the same of small
files). The defaults were measured on Tiny Shakespeare (1.1 MB) by benchmarks/scratch.py
(benchmarks/results/scratch-grid-cpu2-2026-12-02.json): 1 x 256, 8 streams, windows of 16,
lr 3e-3 gave 2.33 bits per character; 1 x 128 2.44 to 2.49; 1 x 512 2.25 at three times the
time; 4 streams 0.01 better at 1.5 times the time; windows of 32 0.03 worse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

from charrnn.errors import CharRNNError, ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ScratchPlan:
    """The model and the learning both sides repeat."""

    family: str = "lstm"
    embedding_dim: int = 32
    hidden_size: int = 256
    num_layers: int = 1
    optimizer: str = "adam"  # the one both sides know: torch.optim.Adam, no weight decay
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 5.0
    window: int = 16
    streams: int = 8
    seed: int = 0

    def __post_init__(self):
        for name in ("embedding_dim", "hidden_size", "num_layers", "window", "streams"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 4096:
                raise ConfigError(f"scratch {name} must be a whole number from 1 to 4096, "
                                  f"got {value!r}")
        if self.optimizer != "adam":
            raise ConfigError(f"scratch optimizer {self.optimizer!r}: this charrnn knows 'adam'")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1
                and self.grad_clip > 0):
            raise ConfigError(f"scratch learning settings out of range: lr {self.lr}, betas "
                              f"({self.beta1}, {self.beta2}), grad_clip {self.grad_clip}")

    def with_streams(self, streams: int | None) -> "ScratchPlan":
        return self if streams is None else replace(self, streams=streams)


def describe(plan: ScratchPlan, alphabet: str) -> bytes:
    """The plan, the alphabet and the versions, as the file records them (UTF-8 JSON)."""
    import torch

    import charrnn
    return json.dumps({"plan": asdict(plan), "alphabet": alphabet,
                       "charrnn": charrnn.__version__, "torch": torch.__version__},
                      ensure_ascii=False, sort_keys=True).encode("utf-8")


def read_description(raw: bytes) -> tuple[ScratchPlan, str, dict]:
    """(plan, alphabet, versions) of `describe`'s bytes; an error for anything else."""
    try:
        found = json.loads(raw.decode("utf-8"))
        names = {f.name for f in fields(ScratchPlan)}
        plan = ScratchPlan(**{k: v for k, v in found["plan"].items() if k in names})
        alphabet = found["alphabet"]
        if not isinstance(alphabet, str) or len(set(alphabet)) != len(alphabet):
            raise ValueError("the alphabet is not a string of distinct characters")
        return plan, alphabet, {k: found.get(k) for k in ("charrnn", "torch")}
    except (ValueError, KeyError, TypeError, AttributeError, CharRNNError) as exc:
        raise ConfigError(f"the file's scratch model description is corrupt ({exc})") from None


def build(plan: ScratchPlan, vocab_size: int):
    """The plan's untrained model, from its seed (the caller's random state is left alone)."""
    import torch

    from charrnn.config import ModelConfig
    from charrnn.models.registry import build_model

    cfg = ModelConfig(type=plan.family, embedding_dim=plan.embedding_dim,
                      hidden_size=plan.hidden_size, num_layers=plan.num_layers, dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        return build_model(cfg, max(vocab_size, 1)).eval()


class Learner:
    """The model of `plan`, learning one window at a time with Adam (the same interface as
    dynamic evaluation's Adapter: `model`, `window`, `learn_window`)."""

    def __init__(self, plan: ScratchPlan, vocab_size: int):
        import torch
        self.plan, self.window = plan, plan.window
        self.model = build(plan, vocab_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=plan.lr,
                                          betas=(plan.beta1, plan.beta2), foreach=False)

    def learn_window(self, x: "torch.Tensor", y: "torch.Tensor", hidden, keep=None) -> None:
        """Read `x` (B, T) from `hidden`, and take one Adam step towards predicting `y` where
        `keep` allows."""
        import torch

        from charrnn.analysis.adapt import window_losses
        with torch.enable_grad():
            logits, _ = self.model(x, hidden)
            losses = window_losses(logits, y, keep)
            if not losses.numel():
                return
            self.optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.plan.grad_clip)
            self.optimizer.step()
