"""One step at a time, as lean as torch allows: the recurrent families' step for sampling.

A model family's `stepper(hidden)` gives sampling and beam search one character per call
(charrnn.models.family); this module holds the rnn, lstm and gru families' own, and the
contexts every stepping loop runs in.

For one character per step the fused nn.LSTM / nn.GRU / nn.RNN modules spend most of their time
in per-call set-up (argument checks, flattening weights, building a (1, B, E) sequence), and
torch's cell ops (`lstm_cell`, ...) do two matrix products and allocate each gate. A CharRNN in
eval mode on the CPU is stepped instead on weights prepared once:

- each layer's input and recurrent weights side by side, so that one product over the row
  [x, h] gives every gate (LSTM rows reordered i, f, o, g: one sigmoid over three gates; GRU
  rows r, z, then n's input and recurrent parts apart, as its formula needs);
- for one sample, that product split by rows into one block per thread (while each block
  keeps MIN_BLOCK_ROWS rows) and run as one batched product (`baddbmm`), which torch spreads
  over the threads, where a matrix-vector product runs on one (measured on 2 cores: a 2 MB
  product 52 µs whole, 29 µs split in two);
- every state, gate and output kept in buffers made once, updated in place: the hidden states
  of all layers lie in one row [x, h1, h2, ...], so layer k reads its [input, state] as one
  slice of it and no copy is made between layers.

The result equals the module's to float rounding; on a CUDA device (where cuDNN's step is
already one kernel), or in training mode, a step is `model(ids, hidden)` (ForwardStep).
"""

from __future__ import annotations

import contextlib

import torch

from charrnn.models.family import ForwardStep, map_hidden

_CELLS = ("lstm", "gru", "rnn")
# Rows of weights per thread below which splitting a product costs more than it gains (a
# 1 x 64 by 64 x 128 product: 2.8 µs whole, 3.5 µs split in two on 2 threads; 256 rows: 15 / 9).
MIN_BLOCK_ROWS = 128


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode inside the block, and back in the mode it was in after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def one_thread(device: torch.device):
    """One thread inside the block on the CPU: a single text read a step at a time gives each
    thread too little work per step, so more threads only wait at every step (10x+ slower;
    a 50,000-character prime through the demo LSTM: 1 s on one thread, over a minute on two
    of a busy machine's cores)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _lean(model) -> bool:
    """Whether `model` is a CharRNN in eval mode on the CPU, whose step this module can take."""
    rnn = getattr(model, "rnn", None)
    return (isinstance(rnn, torch.nn.RNNBase) and rnn.weight_hh_l0.device.type == "cpu"
            and not model.training and getattr(model, "cell", None) in _CELLS
            and rnn.bias and rnn.batch_first
            and not getattr(rnn, "proj_size", 0) and not rnn.bidirectional
            and getattr(rnn, "nonlinearity", "tanh") == "tanh")


def joint_weights(cell: str, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's (weight (R, in + H), bias (R,)) for a single product over the row [x, h]."""
    size = w_hh.size(1)
    if cell == "lstm":  # torch's gate rows i, f, g, o -> i, f, o, g
        order = torch.cat([torch.arange(0, 2 * size), torch.arange(3 * size, 4 * size),
                           torch.arange(2 * size, 3 * size)]).to(w_ih.device)
        return torch.cat([w_ih, w_hh], 1)[order], (b_ih + b_hh)[order]
    if cell == "gru":  # r, z from x and h together; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        two = 2 * size
        weight = torch.cat([torch.cat([w_ih[:two], w_hh[:two]], 1),
                            torch.cat([w_ih[two:], w_hh.new_zeros(size, size)], 1),
                            torch.cat([w_ih.new_zeros(size, w_ih.size(1)), w_hh[two:]], 1)])
        return weight, torch.cat([b_ih[:two] + b_hh[:two], b_ih[two:], b_hh[two:]])
    return torch.cat([w_ih, w_hh], 1), b_ih + b_hh


class Stepper(ForwardStep):
    """`step(ids (B, 1)) -> logits (B, V)`, carrying the hidden state; `.hidden` reads it back
    in the module's (layers, B, H) form. The logits are a buffer the next step overwrites.
    Where the lean step does not apply (or `fast=False`), a ForwardStep."""

    def __init__(self, model, hidden, fast: bool = True):
        super().__init__(model, hidden)
        self.fast = fast and _lean(model)
        if not self.fast:
            return
        rnn = model.rnn
        self.cell, self.size, self.layers = model.cell, rnn.hidden_size, rnn.num_layers
        self.embed = model.embed.weight
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        self.weights = [joint_weights(self.cell, *(getattr(rnn, f"{kind}_l{k}") for kind in kinds))
                        for k in range(self.layers)]
        self.head_w, self.head_b = model.head.weight.t(), model.head.bias
        self._load(hidden)

    def _load(self, hidden) -> None:
        """Make the buffers and views for a batch, holding `hidden`."""
        lstm = self.cell == "lstm"
        h = hidden[0] if lstm else hidden
        batch, width, size = h.size(1), self.embed.size(1), self.size
        rows = self.weights[0][0].size(0)
        threads = torch.get_num_threads()
        blocks = max(d for d in range(1, threads + 1)  # a batch is split by torch already
                     if rows % d == 0 and (d == 1 or (batch == 1 and rows // d >= MIN_BLOCK_ROWS)))
        self.row = h.new_zeros(batch, width + self.layers * size)  # [x, h1, h2, ...]
        self.x = self.row[:, :width]
        self.h = [self.row[:, width + k * size: width + (k + 1) * size]
                  for k in range(self.layers)]
        for k in range(self.layers):
            self.h[k].copy_(h[k])
        self.c = [t.clone() for t in hidden[1].unbind(0)] if lstm else [None] * self.layers
        sigmoid_rows = {"lstm": 3, "gru": 2, "rnn": 0}[self.cell] * size
        self.steps = []  # per layer: (input, weight, bias, out, gates, their sigmoid part)
        for k, (weight, bias) in enumerate(self.weights):
            start = 0 if k == 0 else width + (k - 1) * size
            inputs = weight.size(1)
            out = h.new_empty(blocks, batch, rows // blocks)
            gates = out.view(batch, rows)
            self.steps.append((
                self.row[:, start:start + inputs].unsqueeze(0).expand(blocks, batch, inputs),
                weight.view(blocks, rows // blocks, inputs).transpose(1, 2),
                bias.view(blocks, 1, rows // blocks), out,
                [gates[:, j * size:(j + 1) * size] for j in range(rows // size)],
                gates[:, :sigmoid_rows]))
        self.logits = self.head_b.new_empty(batch, self.head_b.numel())

    @property
    def hidden(self):
        if not self.fast:
            return self._hidden
        h = torch.stack(self.h)
        return (h, torch.stack(self.c)) if self.cell == "lstm" else h

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the samples `index` names, in that order (repeats allowed): beam search."""
        if not self.fast:
            return super().reorder(index)
        self._load(map_hidden(lambda t: t.index_select(1, index), self.hidden))

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return super().__call__(ids)
        torch.index_select(self.embed, 0, ids.view(-1), out=self.x)  # into the row, in place
        for h, c, (inputs, weight, bias, out, g, sigmoid) in zip(self.h, self.c, self.steps):
            torch.baddbmm(bias, inputs, weight, out=out)
            if self.cell == "lstm":  # g: i, f, o, g
                sigmoid.sigmoid_()
                g[3].tanh_()
                c.mul_(g[1]).addcmul_(g[0], g[3])
                torch.tanh(c, out=h).mul_(g[2])
            elif self.cell == "gru":  # g: r, z, n's input part, n's recurrent part
                sigmoid.sigmoid_()
                n = g[2].addcmul_(g[0], g[3]).tanh_()
                h.sub_(n).mul_(g[1]).add_(n)  # (1 - z) * n + z * h
            else:
                torch.tanh(g[0], out=h)
        return torch.addmm(self.head_b, self.h[-1], self.head_w, out=self.logits)
