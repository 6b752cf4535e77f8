"""Model families. Importing this package registers every family in it; the interface they
implement is charrnn.models.family.ModelFamily."""

import torch

from charrnn.device import check_memory
from charrnn.errors import ModelError
from charrnn.models import recurrent  # noqa: F401  (registers rnn, lstm, gru)
from charrnn.models.family import ForwardStep, ModelFamily, map_hidden
from charrnn.models.registry import (build_model, check_installed, check_model_type, family_of,
                                     list_models, register_model)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def estimate_parameters(cfg, vocab_size: int) -> int:
    """The parameter count of the model `cfg` (a ModelConfig) describes, without building it."""
    return family_of(cfg.type).estimate_parameters(cfg, vocab_size)


def estimate_activations(cfg, vocab_size: int, rows: int, seq_len: int) -> int:
    """Floats a training step of `rows` x `seq_len` characters of model `cfg` holds."""
    return family_of(cfg.type).estimate_activations(cfg, vocab_size, rows, seq_len)


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


__all__ = ["ForwardStep", "ModelFamily", "build_model", "check_installed", "check_model_type",
           "check_training_fits", "count_parameters", "estimate_activations",
           "estimate_parameters", "family_of", "list_models", "map_hidden", "register_model"]
