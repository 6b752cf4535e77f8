"""Model registry: families (charrnn.models.family.ModelFamily) by name, built from a ModelConfig.

A family inside charrnn is a module in `charrnn/models/` whose class is registered with
`register_model("name")`, plus its import in `charrnn/models/__init__.py`. A family in a package
of its own names its class in the `charrnn.models` entry-point group of its package metadata:

    [project.entry-points."charrnn.models"]
    minlstm = "my_package.module:MinLSTM"

Such a family is imported only when its name is asked for and is not built in. A checkpoint and
a config name a family by its registry name alone: no other module is ever imported for one.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from charrnn.errors import ModelError

ENTRY_POINTS = "charrnn.models"
_FAMILIES: dict[str, type] = {}


def register_model(name: str) -> Callable:
    """Decorator: register `family` (a ModelFamily subclass that implements the whole
    interface) as `name`."""

    def decorate(family: type) -> type:
        from charrnn.models.family import ModelFamily
        if name in _FAMILIES:
            raise ValueError(f"model family '{name}' is already registered")
        if not (inspect.isclass(family) and issubclass(family, ModelFamily)):
            raise TypeError(f"model family '{name}': {family!r} is not a subclass of "
                            f"charrnn.models.family.ModelFamily")
        if inspect.isabstract(family):
            raise TypeError(f"model family '{name}': {family.__name__} does not define "
                            f"{', '.join(sorted(family.__abstractmethods__))}")
        _FAMILIES[name] = family
        return family

    return decorate


def _entry_points() -> dict:
    """The families installed packages declare, by name (not imported)."""
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def list_models() -> list[str]:
    """Every family's name, built in or installed, sorted."""
    return sorted(set(_FAMILIES) | set(_entry_points()))


def is_installed(name: str) -> bool:
    return name in _FAMILIES or name in _entry_points()


def check_model_type(name: str) -> None:
    """Raise a ModelError listing the registered families if `name` is not one of them."""
    if not is_installed(name):
        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(f"model.type: unknown model family {name!r}{hint}; registered: "
                         f"{', '.join(list_models())}")


def check_installed(name, where: str) -> None:
    """Raise a ModelError naming family `name` (as `where`, e.g. a checkpoint, names it) if no
    family of that name is built in or installed."""
    if isinstance(name, str) and not is_installed(name):
        raise ModelError(f"{where}: its model family {name!r} is not installed (installed: "
                         f"{', '.join(list_models())}): install the package that provides it")


def family_of(name: str) -> type:
    """The family registered as `name`, imported from its package if it is not built in."""
    if name not in _FAMILIES:
        check_model_type(name)
        entry = _entry_points()[name]
        try:
            family = entry.load()
            if _FAMILIES.get(name) is not family:  # unless its module registered it itself
                register_model(name)(family)
        except Exception as exc:  # noqa: BLE001 - a broken package: say which, and why
            raise ModelError(f"model family {name!r} ({entry.value}) could not be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
    return _FAMILIES[name]


def build_model(cfg, vocab_size: int):
    """Build the model that `cfg.type` names for a vocab of `vocab_size` characters."""
    return family_of(cfg.type).build(cfg, vocab_size)
