"""Model families. Importing this package registers every family in it."""

from charrnn.models import recurrent  # noqa: F401  (registers rnn, lstm, gru)
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


__all__ = ["build_model", "check_model_type", "count_parameters", "detach_hidden",
           "list_models", "register_model"]
