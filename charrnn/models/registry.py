"""Model registry: families are registered by name and built from a ModelConfig.

A new family is one new module in `charrnn/models/` with a builder decorated by
`@register_model("name")`, plus its import in `charrnn/models/__init__.py`.
"""

from __future__ import annotations

import difflib
from typing import Callable

from charrnn.errors import ModelError

_BUILDERS: dict[str, Callable] = {}


def register_model(name: str) -> Callable:
    """Decorator: register `builder(cfg: ModelConfig, vocab_size: int) -> nn.Module` as `name`."""

    def decorate(builder: Callable) -> Callable:
        if name in _BUILDERS:
            raise ValueError(f"model family '{name}' is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered family names, sorted."""
    return sorted(_BUILDERS)


def check_model_type(name: str) -> None:
    """Raise a ModelError listing the registered families if `name` is not one of them."""
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(f"model.type: unknown model family {name!r}{hint}; registered: "
                         f"{', '.join(list_models())}")


def build_model(cfg, vocab_size: int):
    """Build the model that `cfg.type` names for a vocab of `vocab_size` characters."""
    check_model_type(cfg.type)
    return _BUILDERS[cfg.type](cfg, vocab_size)
