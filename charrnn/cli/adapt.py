"""The options of a model that learns as it reads (`eval --adapt`, `compress --adapt`); the
method is in adapt.py."""

from __future__ import annotations

from typing import Optional

import typer

from charrnn.analysis.adapt import DEFAULT_DECAY, DEFAULT_LR, DEFAULT_STREAMS, DEFAULT_WINDOW, AdaptSettings
from charrnn.errors import ConfigError

ADAPT_OPTION = typer.Option(False, "--adapt", help="Learn while reading: after each window, one "
                                                   "gradient step on the text just read (dynamic "
                                                   "evaluation). The model file is not changed.")
ADAPT_LR_OPTION = typer.Option(None, "--adapt-lr", metavar="LR", show_default=False,
                               help=f"With --adapt: SGD's learning rate [default: {DEFAULT_LR:g}].")
ADAPT_DECAY_OPTION = typer.Option(None, "--adapt-decay", metavar="D", show_default=False,
                                  help="With --adapt: pull the weights back towards the trained "
                                       "ones by this fraction per step "
                                       f"[default: {DEFAULT_DECAY:g}].")
ADAPT_WINDOW_OPTION = typer.Option(None, "--adapt-window", metavar="N", show_default=False,
                                   help="With --adapt: characters per stream between two steps "
                                        f"[default: {DEFAULT_WINDOW}].")
ADAPT_STREAMS_OPTION = typer.Option(None, "--adapt-streams", metavar="N", show_default=False,
                                    help="With --adapt: parallel streams the text is cut into "
                                         f"(fewer: more steps) [default: {DEFAULT_STREAMS}].")


def adapt_settings(adapt: bool, lr: Optional[float], decay: Optional[float],
                   window: Optional[int], streams: Optional[int]) -> AdaptSettings | None:
    """The settings the --adapt-* options give (checked), or None without --adapt."""
    given = {"lr": lr, "decay": decay, "window": window, "streams": streams}
    if not adapt:
        named = [f"--adapt-{name}" for name, value in given.items() if value is not None]
        if named:
            raise ConfigError(f"{', '.join(named)} only apply with --adapt")
        return None
    return AdaptSettings(**{name: value for name, value in given.items() if value is not None})


def describe(settings: AdaptSettings) -> str:
    s = settings
    return (f"lr {s.lr:g}, decay {s.decay:g}, window {s.window}, "
            f"{s.streams} stream{'s' if s.streams != 1 else ''}")
