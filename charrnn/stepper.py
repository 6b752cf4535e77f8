"""One recurrent step at a time, as lean as torch allows: the inner loop of sampling.

For one character per step the fused nn.LSTM / nn.GRU / nn.RNN modules spend most of their time
in per-call set-up (argument checks, flattening weights, building a (1, B, E) sequence). A
CharRNN in eval mode on the CPU is stepped instead with torch's fused cell ops (`lstm_cell`,
`gru_cell`, `rnn_tanh_cell`) on the layers' own weights, the hidden state kept per layer and
the output layer written into a preallocated buffer. The result equals the module's to float
rounding; any other model, or a CUDA device (where cuDNN's step is already one kernel), goes
through `model(ids, hidden)`.
"""

from __future__ import annotations

import torch

_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


def zero_state(like):
    """A zero hidden state shaped like `like` (a tensor or a tuple of them)."""
    if isinstance(like, tuple):
        return tuple(torch.zeros_like(t) for t in like)
    return torch.zeros_like(like)


def _lean(model, device: torch.device) -> bool:
    rnn = getattr(model, "rnn", None)
    return (device.type == "cpu" and not model.training and getattr(model, "cell", None) in _CELLS
            and isinstance(rnn, torch.nn.RNNBase) and rnn.bias and rnn.batch_first
            and not getattr(rnn, "proj_size", 0) and not rnn.bidirectional
            and getattr(rnn, "nonlinearity", "tanh") == "tanh")


class Stepper:
    """`step(ids (B, 1)) -> logits (B, V)`, carrying the hidden state; `.hidden` reads it back
    in the module's (layers, B, H) form."""

    def __init__(self, model, hidden, fast: bool = True):
        self.model = model
        device = (hidden[0] if isinstance(hidden, tuple) else hidden).device
        self.fast = fast and _lean(model, device)
        if not self.fast:
            self._hidden = hidden
            return
        rnn = model.rnn
        self.cell = _CELLS[model.cell]
        self.layers = [tuple(getattr(rnn, f"{kind}_l{k}") for kind in
                             ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for k in range(rnn.num_layers)]
        self.embed = model.embed.weight
        self.head_w = model.head.weight.t()
        self.head_b = model.head.bias
        if isinstance(hidden, tuple):  # LSTM: per layer (h, c)
            self.state = [(h, c) for h, c in zip(hidden[0].unbind(0), hidden[1].unbind(0))]
        else:
            self.state = list(hidden.unbind(0))
        batch = self.state[0][0].size(0) if isinstance(hidden, tuple) else self.state[0].size(0)
        self.logits = torch.empty(batch, self.head_b.numel(), dtype=self.head_b.dtype,
                                  device=device)

    @property
    def hidden(self):
        if not self.fast:
            return self._hidden
        if isinstance(self.state[0], tuple):
            return (torch.stack([h for h, _ in self.state]), torch.stack([c for _, c in self.state]))
        return torch.stack(self.state)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the samples `index` names, in that order (repeats allowed): beam search."""
        if not self.fast:
            h = self._hidden
            self._hidden = (tuple(t.index_select(1, index) for t in h) if isinstance(h, tuple)
                            else h.index_select(1, index))
            return
        self.state = [tuple(t.index_select(0, index) for t in s) if isinstance(s, tuple)
                      else s.index_select(0, index) for s in self.state]
        self.logits = self.logits.new_empty(index.numel(), self.logits.size(1))

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            logits, self._hidden = self.model(ids, self._hidden)
            return logits[:, -1]
        x = self.embed.index_select(0, ids.view(-1))
        cell, state = self.cell, self.state
        for k, weights in enumerate(self.layers):
            new = cell(x, state[k], *weights)
            state[k] = new
            x = new[0] if isinstance(new, tuple) else new
        return torch.addmm(self.head_b, x, self.head_w, out=self.logits)
