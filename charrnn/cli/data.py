"""`charrnn data ...`: fetch and list known corpora (the work is in text/corpora.py), and list or
clear the cache of encoded corpora (text/cache.py).

`get` talks on stderr only (a rich progress bar when stderr is a terminal, plain lines
otherwise); `list` writes its table or JSON to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

data_app = typer.Typer(help="Fetch and list known corpora (tinyshakespeare, enwik8, text8); "
                            "list or clear the corpus cache.", no_args_is_help=True)

_TO_HELP = "Corpora folder (default: $CHARRNN_DATA_DIR, else $XDG_DATA_HOME/charrnn/corpora, " \
           "by default ~/.local/share/charrnn/corpora)."


def _mb(size: Optional[int]) -> str:
    return "?" if size is None else f"{size / 1e6:,.1f} MB"


class _ProgressView:
    """The `on_progress` callback of corpora.fetch: a bar per stage, or one line per stage."""

    _LABELS = {"download": "downloading", "unpack": "unpacking", "verify": "checking"}

    def __init__(self, reporter, spec):
        self.reporter = reporter
        self.spec = spec
        self.progress = None
        self.task = None
        self.stage = None

    def __call__(self, stage: str, done: int, total: Optional[int]) -> None:
        if self.reporter.quiet:
            return
        if stage != self.stage:
            self._start(stage, total)
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def _start(self, stage: str, total: Optional[int]) -> None:
        if self.stage == "verify" and self.progress is not None:
            self.progress.remove_task(self.task)  # checking a copy already there: no trace
        self.stage = stage
        spec = self.spec
        if stage == "download":
            self._say(f"downloading {spec.name} ({_mb(total)}) from {spec.download_url}")
        elif stage == "unpack":
            self._say(f"unpacking {spec.member} ({_mb(total)})")
        if not self.reporter.interactive:
            return
        if self.progress is None:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=self.reporter.console)
            self.progress.start()
        self.task = self.progress.add_task(self._LABELS.get(stage, stage), total=total)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, markup=False, soft_wrap=True)
        else:
            self.reporter.info(message)

    def close(self) -> None:
        if self.progress is not None:
            if self.stage == "verify":
                self.progress.remove_task(self.task)
            self.progress.stop()
            self.progress = None


@data_app.command("get")
def get_cmd(
    name: str = typer.Argument(..., metavar="NAME",
                               help="A known corpus: tinyshakespeare, enwik8 or text8 (see "
                                    "charrnn data list).", show_default=False),
    to: Optional[Path] = typer.Option(None, "--to", metavar="DIR", help=_TO_HELP,
                                      show_default=False),
    force: bool = typer.Option(False, "--force",
                               help="Download again even if a valid copy is already there."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Download a known corpus, verify its size and sha256 and unpack it.

    Does nothing if a valid copy is already there. Set CHARRNN_URL_<NAME> to use a mirror.

    Example: charrnn data get tinyshakespeare, then train with data.corpus: tinyshakespeare
    """
    from charrnn.text import corpora
    from charrnn.report import Reporter

    spec = corpora.get_spec(name)
    reporter = Reporter(quiet=quiet)
    view = _ProgressView(reporter, spec)
    try:
        result = corpora.fetch(spec.name, to, force=force, on_progress=view)
    finally:
        view.close()
    checked = "size and sha256" if result.sha256_checked else "size"
    if not result.downloaded:
        reporter.info(f"{spec.name} is already there: {result.path} ({result.size:,} bytes, "
                      f"{checked} verified); nothing to do")
        return
    if result.replaced:
        reporter.info(f"replaced the copy that was there ({result.replaced})")
    reporter.info(f"wrote {result.path} ({result.size:,} bytes, {checked} verified); train on "
                  f"it with data.corpus: {spec.name} in a config")


@data_app.command("list")
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects instead."),
    to: Optional[Path] = typer.Option(None, "--to", metavar="DIR", help=_TO_HELP,
                                      show_default=False),
) -> None:
    """Show the known corpora: size, source, licence, and whether each is downloaded.

    Example: charrnn data list --json
    """
    from charrnn.text import corpora

    rows = corpora.list_corpora(to)
    out = sys.stdout
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    width = max(len(row["name"]) for row in rows)
    out.write(f"corpora folder: {corpora.corpora_dir(to)}\n")
    for row in rows:
        size = _mb(row["size"])
        if row["member"]:
            size += f" (zip {_mb(row['download_size'])})"
        status = {"downloaded": "downloaded", "missing": "not downloaded",
                  "incomplete": "incomplete: get it again"}[row["status"]]
        out.write(f"\n{row['name']:<{width}}  {size:<24}  {status}\n"
                  f"  {row['description']}\n"
                  f"  licence: {row['license']}\n"
                  f"  source:  {row['source']}\n")
    out.write("\nget one with: charrnn data get NAME\n")


@data_app.command("cache")
def cache_cmd(
    clear: bool = typer.Option(False, "--clear", help="Remove every entry of the cache."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead."),
) -> None:
    """List the corpus cache (encoded texts: size, last use, source), or clear it.

    Large single files are encoded once into the cache folder ($CHARRNN_CACHE_DIR, else
    ~/.cache/charrnn) and memory-mapped from it. It holds at most $CHARRNN_CACHE_MAX_MB MB
    (default 2048; 0 turns it off): the least recently used entries make room for a new one.

    Example: charrnn data cache --clear
    """
    import time

    from charrnn.text import cache

    folder, limit = cache.cache_dir(), cache.max_bytes()
    out = sys.stdout
    if clear:
        count, freed = cache.clear(folder)
        sys.stderr.write(f"removed {count} cache entr{'y' if count == 1 else 'ies'} "
                         f"({_mb(freed)}) from {folder}\n")
        return
    entries = sorted(cache.list_entries(folder), key=lambda e: -e.last_used)
    total = sum(e.bytes for e in entries)
    if as_json:
        out.write(json.dumps({"folder": str(folder), "max_bytes": limit, "bytes": total,
                              "entries": [vars(e) for e in entries]}, indent=2) + "\n")
        return
    bound = f"at most {_mb(limit)}" if limit else "the cache is off"
    out.write(f"corpus cache: {folder}\n{len(entries)} entr{'y' if len(entries) == 1 else 'ies'},"
              f" {_mb(total)}; {bound} (${cache.MAX_MB_ENV})\n")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        what = e.source or "(incomplete entry)"
        note = "" if e.status == "current" else f"  [{e.status}]"
        out.write(f"\n{_mb(e.bytes):>12}  last used {used}  {what}{note}\n")
    if entries:
        out.write("\nclear it with: charrnn data cache --clear\n")
