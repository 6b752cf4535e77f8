"""The benchmark harness behind the README's performance table, one module per group.

Every row comes from one function registered with `@bench(GROUP)` in that group's module
(train.py, sample.py, eval.py, load.py, startup.py, scaling.py, compress.py); it takes the
shared `Context` and returns a list of `row(...)` dicts. The runner (cli.py) calls the
registered functions of each group in the order they are defined, and report.py turns the rows
into the table and the JSON.
"""

from __future__ import annotations

from typing import Callable

GROUPS = ("train", "sample", "eval", "load", "startup", "memory", "scaling", "compress")
# the groups' modules (the `memory` group is in startup.py)
MODULES = ("train", "sample", "eval", "load", "startup", "scaling", "compress")
QUICK_WHEN_NAMED = ("compress",)  # in --quick runs only when --only names them

REGISTRY: dict[str, list[Callable]] = {group: [] for group in GROUPS}


def bench(group: str) -> Callable[[Callable], Callable]:
    """Register a function `fn(ctx) -> list[row]` as (part of) a benchmark group."""
    if group not in REGISTRY:
        raise ValueError(f"unknown benchmark group {group!r} (known: {', '.join(GROUPS)})")

    def register(fn: Callable) -> Callable:
        REGISTRY[group].append(fn)
        return fn

    return register
