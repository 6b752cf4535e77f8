"""Recurrent families on torch's fused modules (cuDNN on a GPU): rnn, lstm and gru.

    ids (B, T) -> Embedding -> nn.RNN / nn.LSTM / nn.GRU stack (dropout between layers)
               -> Dropout -> Linear head -> logits (B, T, vocab)

Their one step for sampling is the lean CPU step of charrnn/models/stepper.py; their units for `show`
are each layer's h and, for an LSTM, its cell c and gates i, f, g, o. torch's fused nn.LSTM
exposes none of them per step, so each layer's h sequence comes from running that layer alone
(fused), and its gates from one matmul over the whole text with the layer's weights; only the
cell's elementwise recurrence c_t = f_t c_{t-1} + i_t g_t steps.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from charrnn.config import ModelConfig
from charrnn.models.family import ModelFamily, map_hidden
from charrnn.models.registry import register_model

_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # weight rows per hidden unit in each family's layers


def run_recurrent(rnn: torch.nn.Module, x: torch.Tensor, hidden):
    """Run a fused nn.RNN / LSTM / GRU in the dtype autocast asks for.

    Under autocast, the cuDNN recurrent kernel is always cast to fp16, whatever dtype autocast
    was given. So under bf16 autocast the module runs outside autocast on bf16 copies of its
    weights (the fp32 weights stay the ones the optimizer updates), with a bf16 hidden state.
    A training step runs this once (tests/test_precision.py), so the copies are made once per
    optimizer step: for the 3 x 512 LSTM, 5.5 M weights, 33 MB moved against a step of 16,384
    characters. (A cache kept across steps would have to notice the fused optimizer's in-place
    update, which does not advance the weights' version counters.)
    """
    kind = x.device.type
    if not (torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16):
        return rnn(x, hidden)
    bf16 = lambda t: t.to(torch.bfloat16)  # noqa: E731
    weights = {name: bf16(p) for name, p in rnn.named_parameters()}
    with torch.autocast(kind, enabled=False), warnings.catch_warnings():
        # the bf16 copies are separate tensors, which cuDNN notes (and packs) on each call
        warnings.filterwarnings("ignore", message="RNN module weights are not part")
        return torch.func.functional_call(rnn, weights, (bf16(x), map_hidden(bf16, hidden)))


@register_model("rnn")
@register_model("lstm")
@register_model("gru")
class CharRNN(ModelFamily):
    """A character-level recurrent language model.

    `forward(idx, hidden)` returns `(logits, hidden)`; pass the returned hidden state into the
    next call to continue the same text (an LSTM's state is the tuple `(h, c)`).
    """

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int,
                 num_layers: int, dropout: float):
        super().__init__(ModelConfig(type=cell, embedding_dim=embedding_dim,
                                     hidden_size=hidden_size, num_layers=num_layers,
                                     dropout=dropout), vocab_size)
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = _MODULES[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                                  dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    @classmethod
    def build(cls, cfg, vocab_size: int) -> CharRNN:
        return cls(cfg.type, vocab_size, cfg.embedding_dim, cfg.hidden_size, cfg.num_layers,
                   cfg.dropout)

    def forward(self, idx: torch.Tensor, hidden=None):
        out, hidden = run_recurrent(self.rnn, self.embed(idx), hidden)  # (B, T, H)
        if self.training:  # (skipping the no-op call keeps one-step sampling lean)
            out = self.drop(out)
        return self.head(out), hidden  # (B, T, V)

    def initial_state(self, batch: int, device: torch.device | None = None):
        h = torch.zeros(self.rnn.num_layers, batch, self.rnn.hidden_size, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    @classmethod
    def estimate_parameters(cls, cfg, vocab_size: int) -> int:
        """The parameter count of the model `cfg` describes, computed without building it."""
        g, e, h, layers = GATES[cfg.type], cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
        recurrent = g * h * (e + h + 2) + (layers - 1) * g * h * (2 * h + 2)
        return vocab_size * e + recurrent + (h + 1) * vocab_size

    @classmethod
    def estimate_activations(cls, cfg, vocab_size: int, rows: int, seq_len: int) -> int:
        """Floats a training step of `rows` x `seq_len` characters holds for its backward pass,
        twice the forward's outputs (embedding, each layer's gates and states, logits and their
        softmax and gradient). With the weights and Adam's state, 0.87 to 1.04 times the peak
        RSS measured on a CPU for LSTM and GRU (2-3 layers, hidden 256-1024, batches 64 x 100
        to 256 x 256), 1.46 times for an RNN."""
        g, h = GATES[cfg.type], cfg.hidden_size
        per_char = cfg.embedding_dim + cfg.num_layers * (g + 2) * h + h + 3 * vocab_size
        return 2 * rows * seq_len * per_char

    @classmethod
    def estimate_step(cls, cfg, vocab_size: int) -> int:
        """Floats of one sample's step: its input, each layer's state and gates, the logits."""
        return cfg.embedding_dim + 10 * cfg.num_layers * cfg.hidden_size + 4 * vocab_size

    def stepper(self, hidden, fast: bool = True):
        from charrnn.models.stepper import Stepper  # the lean CPU step, benchmarked by `make bench`
        return Stepper(self, hidden, fast=fast)

    def read_units(self, idx: torch.Tensor, hidden=None, units: bool = True):
        x, found, after = self.embed(idx), {}, []
        for k in range(self.rnn.num_layers):
            layer = _single_layer(self.rnn, k)
            before = map_hidden(lambda t: t[k:k + 1], hidden)
            out, state = layer(x, before)  # (1, n, H): this layer's h at every step
            after.append(state)
            if units:
                found[(k, "h")] = out[0]
            if units and self.cell == "lstm":
                h0, c0 = (None, None) if before is None else before
                found.update(((k, kind), values) for kind, values
                             in lstm_gates(x[0], out[0], layer, c0=c0, h0=h0).items())
            x = out
        return self.head(x[0]), found, map_hidden(lambda *layers: torch.cat(layers), *after)


def _single_layer(rnn: nn.RNNBase, k: int) -> nn.RNNBase:
    """Layer k of a fused stack as a module of its own, sharing the weights."""
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    layer = type(rnn)(rnn.input_size if k == 0 else rnn.hidden_size, rnn.hidden_size, 1,
                      bias=rnn.bias, batch_first=True, **kwargs)
    layer.load_state_dict({name.replace(f"_l{k}", "_l0"): value
                           for name, value in rnn.state_dict().items() if name.endswith(f"_l{k}")
                           or name.endswith(f"_l{k}_reverse")})
    return layer.to(next(rnn.parameters()).device)


def lstm_gates(x: torch.Tensor, h: torch.Tensor, layer: nn.LSTM,
               c0: torch.Tensor | None = None,
               h0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Gates i, f, g, o and cell c of a one-layer LSTM, given its inputs x (T, In), the h
    (T, H) it produced and its state (h0, c0 (H,); zero if None) before x; the gates are one
    matmul over the whole text."""
    hidden = h.size(1)
    h_prev = torch.cat([h.new_zeros(1, hidden) if h0 is None else h0.view(1, hidden), h[:-1]])
    pre = x @ layer.weight_ih_l0.T + h_prev @ layer.weight_hh_l0.T
    if layer.bias:
        pre = pre + layer.bias_ih_l0 + layer.bias_hh_l0
    i, f, g, o = pre.chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    update, forget = (i * g).cpu(), f.cpu()
    cells = torch.empty_like(update)
    c = h.new_zeros(hidden).cpu() if c0 is None else c0.reshape(hidden).cpu()
    for u_t, f_t, c_t in zip(update.unbind(0), forget.unbind(0), cells.unbind(0)):
        c = torch.addcmul(u_t, f_t, c, out=c_t)  # elementwise only; the matmuls are above
    return {"c": cells.to(h.device), "i": i, "f": f, "g": g, "o": o}
