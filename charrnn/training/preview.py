"""Short samples while training, written to `samples.jsonl` in the run directory.

A preview draws from its own generator (seeded from the run's seed and the step), so the
training random numbers are never touched; it reads from a fresh state, never the carried one,
and leaves the model in the mode it found it. A resumed run therefore continues exactly, and
the same step gives the same preview.
"""

from __future__ import annotations

from pathlib import Path

import torch

from charrnn.config import Config
from charrnn.errors import ConfigError
from charrnn.training.rundir import SAMPLES_NAME, MetricsLog
from charrnn.generation.sampling import generate
from charrnn.text.vocab import Vocab


def check_preview(cfg: Config, vocab: Vocab) -> None:
    """Refuse a `sample.preview_prime` with characters the model cannot read."""
    missing = vocab.missing(cfg.sample.preview_prime or "")
    if missing:
        raise ConfigError(f"sample.preview_prime has characters the training text lacks: "
                          f"{''.join(sorted(missing))!r}")


class Previewer:
    """`due(step)` says when; `__call__(model, step)` samples, logs and returns the record."""

    def __init__(self, cfg: Config, vocab: Vocab, device: torch.device, run_dir: Path,
                 resume_step: int | None = None):
        s, t = cfg.sample, cfg.train
        check_preview(cfg, vocab)
        self.prime = s.preview_prime or ""
        self.every = t.sample_every if t.sample_every is not None else t.eval_every
        self.enabled = s.preview_length > 0 and self.every > 0
        self.cfg, self.vocab, self.device = cfg, vocab, device
        self.log = MetricsLog(Path(run_dir) / SAMPLES_NAME, resume_step=resume_step) \
            if self.enabled else None

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def __call__(self, model: torch.nn.Module, step: int) -> dict:
        was_training = model.training
        try:
            chars = generate(model, self.vocab, [self.prime], self.cfg.sample.preview_length,
                             device=self.device, temperature=self.cfg.sample.temperature,
                             top_k=self.cfg.sample.top_k, top_p=self.cfg.sample.top_p,
                             seed=(self.cfg.train.seed + step) % 2**64)
            text = self.prime + "".join(c for (c,) in chars)
        finally:
            model.train(was_training)
        record = {"step": step, "text": text}
        self.log.write(record)
        return record

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
