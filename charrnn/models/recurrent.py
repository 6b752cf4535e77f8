"""Recurrent families on torch's fused modules (cuDNN on a GPU): rnn, lstm and gru.

    ids (B, T) -> Embedding -> nn.RNN / nn.LSTM / nn.GRU stack (dropout between layers)
               -> Dropout -> Linear head -> logits (B, T, vocab)
"""

from __future__ import annotations

import torch
from torch import nn

from charrnn.device import run_recurrent
from charrnn.models.registry import register_model

_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # weight rows per hidden unit in each family's layers


class CharRNN(nn.Module):
    """A character-level recurrent language model.

    `forward(idx, hidden)` returns `(logits, hidden)`; pass the returned hidden state into the
    next call to continue the same text (an LSTM's state is the tuple `(h, c)`).
    """

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int,
                 num_layers: int, dropout: float):
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = _MODULES[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                                  dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx: torch.Tensor, hidden=None):
        out, hidden = run_recurrent(self.rnn, self.embed(idx), hidden)  # (B, T, H)
        if self.training:  # (skipping the no-op call keeps one-step sampling lean)
            out = self.drop(out)
        return self.head(out), hidden  # (B, T, V)


def _builder(cell: str):
    def build(cfg, vocab_size: int) -> CharRNN:
        return CharRNN(cell, vocab_size, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers,
                       cfg.dropout)

    build.__name__ = f"build_{cell}"
    build.__doc__ = f"A {cell.upper()} CharRNN on torch's fused nn.{_MODULES[cell].__name__}."
    return register_model(cell)(build)


build_rnn = _builder("rnn")
build_lstm = _builder("lstm")
build_gru = _builder("gru")


def estimate_parameters(cfg, vocab_size: int) -> int:
    """The parameter count of the model `cfg` describes, computed without building it."""
    g, e, h, layers = GATES.get(cfg.type, 4), cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
    recurrent = g * h * (e + h + 2) + (layers - 1) * g * h * (2 * h + 2)
    return vocab_size * e + recurrent + (h + 1) * vocab_size


def estimate_activations(cfg, vocab_size: int, rows: int, seq_len: int) -> int:
    """Floats a training step of `rows` x `seq_len` characters holds for its backward pass,
    twice the forward's outputs (embedding, each layer's gates and states, logits and their
    softmax and gradient). With the weights and Adam's state, 0.87 to 1.04 times the peak RSS
    measured on a CPU for LSTM and GRU (2-3 layers, hidden 256-1024, batches 64 x 100 to
    256 x 256), 1.46 times for an RNN."""
    g, h = GATES.get(cfg.type, 4), cfg.hidden_size
    per_char = cfg.embedding_dim + cfg.num_layers * (g + 2) * h + h + 3 * vocab_size
    return 2 * rows * seq_len * per_char
