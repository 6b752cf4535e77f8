"""The one interface of a model family: all that charrnn asks of a model, and nothing more.

A family is a subclass of `ModelFamily` registered under a name (`register_model`, or the
`charrnn.models` entry-point group for a family in a package of its own; see registry.py).
Training, evaluation, sampling, beam search, `show` and the memory checks use only what is
below; none of them reaches into a family's attributes.

Must give:
    forward(idx, hidden=None) -> (logits, hidden)   ids (B, T) -> logits (B, T, vocab), with the
        state carried: pass the returned hidden state into the next call to continue the texts.
    initial_state(batch, device) -> hidden          the state before any character is read
        (what `forward` starts from when `hidden` is None).
    estimate_activations(cfg, vocab_size, rows, seq_len) -> int   (classmethod) floats one
        training step of `rows` x `seq_len` characters holds for its backward pass.
May give (each has a default built on the above):
    build(cfg, vocab_size)               (classmethod) the model a `ModelConfig` describes;
                                         default `cls(cfg, vocab_size)`.
    vocab_rows                           names of the state-dict tensors indexed by character
                                         (first dim: the vocab), which fine-tuning widens for
                                         new characters; default the `embed` and `head` layers'.
    estimate_parameters(cfg, vocab_size) (classmethod) parameter count without building it;
                                         default: built on the meta device and counted.
    estimate_step(cfg, vocab_size)       (classmethod) floats one sample holds while sampled a
                                         character at a time; default: a training step of one
                                         character (an upper bound).
    stepper(hidden, fast=True)           one step at a time for sampling and beam search;
                                         default: `ForwardStep`, `forward` on one character.
    read_units(idx, hidden, units=True)  per-unit activations for `charrnn show`; default: the
                                         predictions only, no units.

A hidden state is None (the initial state), a tensor, or a tuple of tensors, each with the
batch (one row per stream or sample) on dim 1, as torch's recurrent modules hold it: training
splits and gathers it by rows, checkpoints keep it in fp32, beam search reorders its rows.
`map_hidden` applies a function to each of its tensors.
"""

from __future__ import annotations

import abc
from typing import Callable

import torch
from torch import nn


def map_hidden(fn: Callable, hidden, *others):
    """`fn` applied to every tensor of a hidden state (None, a tensor, or a tuple or list of
    tensors), in the same form (a list gives a tuple); with `others`, states of the same form,
    `fn` gets the matching tensor of each: `map_hidden(lambda *t: torch.cat(t, 1), a, b)`."""
    if hidden is None:
        return None
    if isinstance(hidden, (tuple, list)):
        return tuple(fn(*parts) for parts in zip(hidden, *others))
    return fn(hidden, *others)


class ForwardStep:
    """`step(ids (B, 1)) -> logits (B, V)`, carrying the state in `.hidden`: any family, one
    character through its `forward`."""

    fast = False

    def __init__(self, model: "ModelFamily", hidden):
        self.model, self._hidden = model, hidden

    @property
    def hidden(self):
        return self._hidden

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the samples `index` names, in that order (repeats allowed): beam search."""
        self._hidden = map_hidden(lambda t: t.index_select(1, index), self._hidden)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        logits, self._hidden = self.model(ids, self._hidden)
        return logits[:, -1]


class ModelFamily(nn.Module, abc.ABC):
    """Base of every model family (see the module docstring for the contract). `config` is the
    `ModelConfig` it was built from, `vocab_size` the number of characters it reads and
    predicts."""

    vocab_rows: tuple[str, ...] = ("embed.weight", "head.weight", "head.bias")

    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = cfg, vocab_size

    @classmethod
    def build(cls, cfg, vocab_size: int) -> "ModelFamily":
        return cls(cfg, vocab_size)

    @abc.abstractmethod
    def forward(self, idx: torch.Tensor, hidden=None):
        """ids (B, T) from `hidden` (None: the initial state) -> (logits (B, T, V), hidden)."""

    @abc.abstractmethod
    def initial_state(self, batch: int, device: torch.device | None = None):
        """The state of `batch` streams before any character is read."""

    @classmethod
    @abc.abstractmethod
    def estimate_activations(cls, cfg, vocab_size: int, rows: int, seq_len: int) -> int:
        """Floats a training step of `rows` x `seq_len` characters holds for its backward."""

    @classmethod
    def estimate_parameters(cls, cfg, vocab_size: int) -> int:
        """The parameter count of the model `cfg` describes (built on the meta device: no
        memory is taken)."""
        with torch.device("meta"):
            model = cls.build(cfg, vocab_size)
        return sum(p.numel() for p in model.parameters())

    @classmethod
    def estimate_step(cls, cfg, vocab_size: int) -> int:
        """Floats one sample holds while it is sampled a character at a time."""
        return cls.estimate_activations(cfg, vocab_size, 1, 1)

    def stepper(self, hidden, fast: bool = True) -> ForwardStep:
        """One step at a time from `hidden`: `step(ids (B, 1)) -> logits (B, V)`, `.hidden`,
        `.reorder(index)`. `fast=False` asks for the plain `forward` step (which a fast one
        must match)."""
        return ForwardStep(self, hidden)

    def read_units(self, idx: torch.Tensor, hidden=None, units: bool = True):
        """Read ids (1, T) from `hidden`: (logits (T, V), {(layer, kind): (T, size)}, hidden
        after), the dict holding what each unit does at each character (h of each layer, an
        LSTM's gates...) where `units`; none by default."""
        logits, hidden = self(idx, hidden)
        return logits[0], {}, hidden
