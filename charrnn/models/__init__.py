"""Model families. Importing this package registers every family in it."""

import torch

from charrnn.device import check_memory
from charrnn.errors import ModelError
from charrnn.models import recurrent  # noqa: F401  (registers rnn, lstm, gru)
from charrnn.models.recurrent import estimate_activations, estimate_parameters
from charrnn.models.registry import build_model, check_model_type, list_models, register_model


def detach_hidden(hidden):
    """Cut the graph behind a hidden state (a tensor or a tuple of them), keeping its values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_training_fits(cfg, vocab_size: int, rows: int, device) -> None:
    """Refuse, before it is built, a model whose training cannot fit in the memory of `device`:
    its weights, their gradients and Adam's two moments (4 bytes each), and the activations of
    one step of `rows` x `cfg.train.seq_len` characters (`rows`: this process's share of a
    batch)."""
    m, t = cfg.model, cfg.train
    params = estimate_parameters(m, vocab_size)
    need = 4 * (4 * params + estimate_activations(m, vocab_size, rows, t.seq_len))
    what = f"this model ({m.type} {m.num_layers} x {m.hidden_size}, {params:,} parameters)"
    smaller = "lower model.hidden_size / model.num_layers"
    check_memory(need, device, f"training {what} on batches of {rows:,} x {t.seq_len:,}",
                 f"{smaller}, or train.batch_size / train.seq_len", ModelError)
    if device.type != "cpu":  # its weights are built in the machine's memory, then moved
        check_memory(4 * params, torch.device("cpu"), f"building {what}", smaller, ModelError)


__all__ = ["build_model", "check_model_type", "check_training_fits", "count_parameters",
           "detach_hidden", "estimate_parameters", "list_models", "register_model"]
