"""`charrnn data ...`: fetch and list known corpora (the commands; the work is in corpora.py)."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Fetch and list known corpora (tinyshakespeare, enwik8, text8).",
                       no_args_is_help=True)
