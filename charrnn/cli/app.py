"""The `charrnn` command line: parses arguments, calls the library, maps errors to exit codes.

stdout carries only the product (generated text, eval results, info); everything else goes to
stderr. Exit codes: 0 success, 1 a run that failed, 2 bad input, 130 interrupted. torch is
imported inside the commands, so `charrnn --help` and `--version` answer fast.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as cli_errors

from charrnn import __version__
from charrnn.cli.common import (QUIET_OPTION, StopRequests, choose_checkpoint,
                                flag_overrides, make_reporter, naming_checkpoint, run_config)
from charrnn.cli.compress import compress_cmd, decompress_cmd
from charrnn.cli.data import data_app
from charrnn.cli.evaluate import eval_cmd
from charrnn.cli.export import export_cmd
from charrnn.cli.plan import plan_cmd
from charrnn.cli.tune import tune_cmd
from charrnn.cli.sample import sample_cmd
from charrnn.cli.view import plot_cmd, show_cmd
from charrnn.errors import CharRNNError

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

app = typer.Typer(
    name="charrnn",
    help="Train character-level recurrent language models (RNN, LSTM, GRU) and sample from "
         "them.\n\nQuick start: charrnn train configs/tiny.yaml, then charrnn sample --prime "
         "\"sharks\".",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"charrnn {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Train character-level recurrent language models (RNN, LSTM, GRU) and sample from them.

    Quick start: charrnn train configs/tiny.yaml, then charrnn sample --prime "sharks".
    """


# ------------------------------------------------------------------------------------ train

@app.command("train", context_settings={"allow_extra_args": True})
def train_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Argument(
        None, help="YAML config (see configs/). May be left out with --resume, which then uses "
                   "the saved run's config, or with --data, which then trains with every "
                   "default.", show_default=False),
    overrides: List[str] = typer.Option(
        [], "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one config value (repeatable), e.g. --set model.type=gru "
             "--set train.lr=1e-3. Values are read as YAML scalars."),
    data: Optional[str] = typer.Option(None, "--data", "-d",
                                       help="Training text: a file, a folder, a quoted glob "
                                            "pattern ('src/**/*.py'), or - for stdin (sets "
                                            "data.path)."),
    out: Optional[str] = typer.Option(None, "--out", "-o",
                                      help="Run directory for checkpoints and logs "
                                           "(sets train.out_dir; default runs/<config name>)."),
    device: Optional[str] = typer.Option(None, "--device",
                                         help="auto, cpu, cuda, cuda:N or mps (sets train.device)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps",
                                            help="Optimizer steps in total (sets train.max_steps)."),
    max_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", help="Stop cleanly after this many minutes, evaluate and save "
                                    "(sets train.max_minutes)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (sets train.seed)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads (sets train.threads; default: the count "
                                "measured fastest for this model on this machine)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", "-r", metavar="RUN_DIR|CKPT",
        help="Continue a run from its last.pt (or the checkpoint given) where it stopped: "
             "exactly, bit for bit, except with a time budget or with dropout between cuDNN "
             "layers (the log warns then)."),
    init_from: Optional[str] = typer.Option(
        None, "--init-from", metavar="RUN_DIR|CKPT",
        help="Start a new run from the weights of another run or checkpoint (fine-tuning): "
             "step 0, a new optimizer, the config's schedule. The config's model must match "
             "the checkpoint's; characters the model lacks are added (data.unknown)."),
    force: bool = typer.Option(False, "--force",
                               help="Start over in a run directory that already holds a run, "
                                    "deleting its checkpoints."),
    reprobe: bool = typer.Option(False, "--reprobe",
                                 help="Measure this machine's training speed anew instead of "
                                      "reusing the cached measurement (it chooses the CPU "
                                      "threads where train.threads is null)."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a model as CONFIG says, writing checkpoints to its run directory.

    Example: charrnn train configs/tiny.yaml --set model.type=gru --out runs/gru
    """
    _check_extra_args(config, data, ctx.args)
    flags = {"--data": data, "--out": out, "--device": device, "--max-steps": max_steps,
             "--max-minutes": max_minutes, "--seed": seed, "--threads": threads}
    sets = flag_overrides(overrides, flags)  # a flag's error names the flag
    if init_from is not None and resume is not None:
        raise cli_errors.UsageError("--init-from starts a new run and --resume continues one: "
                                    "give one")
    if config is None and resume is None and data is None:
        raise cli_errors.UsageError("give a CONFIG file, --data TEXT to train a planned run, "
                                    "or --resume RUN_DIR to continue a run")
    cfg, user_keys = run_config(config, sets, resume=resume, init_from=init_from)
    from charrnn.training.distributed import is_main_process
    from charrnn.training.loop import train
    reporter = make_reporter(quiet or not is_main_process())  # under torchrun, rank 0 reports
    from charrnn.device import available_cores
    if cfg.train.threads and cfg.train.threads > available_cores():
        reporter.warn(f"train.threads = {cfg.train.threads} is more than the {available_cores()} "
                      f"core(s) this process may use: training will be slower, not faster")
    with StopRequests(reporter, "stopping after this step") as stop:
        try:
            result = train(cfg, resume=resume, run_dir=out, force=force, init_from=init_from,
                           on_event=reporter.training_event, should_stop=stop,
                           reprobe=reprobe, user_keys=user_keys)
        finally:
            reporter.close()
    _report_trained(result, cfg, reporter)


def _report_trained(result, cfg, reporter) -> None:
    """How the run ended, and how to go on with it; an interrupted run exits with 130."""
    best = (f"; best val loss {result.best_val_loss:.4f}"
            if result.best_val_loss is not None else "")
    if result.finished_before:  # nothing to do, which is not an error: a rerun job ends here
        if result.stopped_by == "max_minutes":  # one more budget beyond the time spent
            minutes = result.elapsed_seconds / 60 + cfg.train.max_minutes
            budget, flag = "its time budget", f"--max-minutes {_round_up(minutes)}"
        else:
            budget, flag = "its budget", f"--max-steps {max(2 * result.step, 1)}"
        reporter.info(f"{result.run_dir} is already finished at step {result.step}{best}; "
                      f"nothing was trained. To train it further, raise {budget}, e.g. "
                      f"charrnn train --resume {result.run_dir} {flag}")
        return
    if result.stopped_by == "interrupt":
        reporter.info(f"interrupted at step {result.step}: saved {result.run_dir / 'last.pt'}; "
                      f"continue with: charrnn train --resume {result.run_dir}")
        raise typer.Exit(130)
    why = " (time budget reached)" if result.stopped_by == "max_minutes" else ""
    reporter.info(f"done at step {result.step}{why}{best}; checkpoints in {result.run_dir}")


def _round_up(value: float) -> str:
    """`value` to three significant figures, rounded up (a budget that must exceed it)."""
    scale = 10 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / scale - 1e-9) * scale:.12g}"


def _check_extra_args(config: Optional[Path], data: Optional[str], extra: List[str]) -> None:
    """Arguments beyond CONFIG: most often a --data pattern that the shell expanded."""
    if data is not None and config is not None and config.suffix not in (".yaml", ".yml"):
        extra = [str(config), *extra]  # the second file of the pattern was taken as CONFIG
    if not extra:
        return
    if data is None:
        raise cli_errors.UsageError(f"unexpected extra argument(s): {' '.join(extra)}")
    files = ", ".join([data, *extra][:4]) + (", ..." if len(extra) > 3 else "")
    folder = os.path.dirname(data) or "."
    raise cli_errors.UsageError(
        f"--data takes one path, but the shell expanded a pattern into {len(extra) + 1} files "
        f"({files}): quote the pattern (--data '{folder}/*{os.path.splitext(data)[1]}') or "
        f"pass the folder (--data {folder}/)")


# ------------------------------------------------------------------------------------ sample

app.command("sample")(sample_cmd)
app.command("export")(export_cmd)
app.command("plan")(plan_cmd)
app.command("tune")(tune_cmd)
app.command("compress")(compress_cmd)
app.command("decompress")(decompress_cmd)
app.command("eval")(eval_cmd)


# ------------------------------------------------------------------------------------ info

@app.command("info")
def info_cmd(
    path: Optional[str] = typer.Argument(
        None, metavar="[CKPT|RUN_DIR]",
        help="Checkpoint or run directory. Default: $CHARRNN_CHECKPOINT, else the best.pt of "
             "the run started most recently under ./runs.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Describe a checkpoint: model, sizes, parameters, vocab, step and losses (--json: and config).

    Example: charrnn info runs/tiny
    """
    from charrnn.api import describe_checkpoint
    from charrnn.checkpoint import load_checkpoint
    from charrnn.report import plural

    ckpt, why = choose_checkpoint(path)
    with naming_checkpoint(ckpt, why):
        state = load_checkpoint(ckpt)
    info, run_end = describe_checkpoint(ckpt, state,
                                        sum(t.numel() for t in state["model"].values()))
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    notes = (["exported model: weights only"] if info["kind"] == "export" else []) + (
        [f"quantized to {info['quantization']}"] if info["quantization"] else [])
    note = f" ({', '.join(notes)})" if notes else ""
    sys.stdout.write(
        f"checkpoint   {info['path']}{note}\n"
        f"model        {info['model']}: {info['num_layers']} x {info['hidden_size']} "
        f"(embedding {info['embedding_dim']}, dropout {info['dropout']})\n"
        f"parameters   {info['parameters']:,}\n"
        f"vocab        {plural(info['vocab_size'], 'character')}\n"
        f"step         {info['step']} of {info['max_steps']}\n"
        f"val loss     {fmt(info['val_loss'])} (best {fmt(info['best_val_loss'])}) nats/char\n"
        f"train loss   {fmt(info['train_loss'])} nats/char\n"
        + ("" if info["kind"] == "export" else
           f"stopped      {_stop_reason(state)}\n" if run_end is None else
           f"stopped      - (the best snapshot, from step {info['step']}); the run stopped "
           f"{_stop_reason(run_end)}, see last.pt\n" if run_end.get("stopped_by") else
           f"stopped      - (the best snapshot, from step {info['step']}); last.pt is at step "
           f"{run_end['step']}, saved while training (still running, or killed): --resume "
           f"continues from there\n"))


def _stop_reason(state: dict) -> str:
    """Why training stopped, as the checkpoint records it (a save during training has none)."""
    why = state.get("stopped_by")
    if why == "max_steps":
        return f"at max_steps (step {state['step']})"
    if why == "max_minutes":
        return f"by the time budget (max_minutes {state['config']['train']['max_minutes']:g})"
    if why == "interrupt":
        return "by an interrupt (Ctrl-C or a signal): resume to continue"
    return "- (saved while training: still running, or killed)"


app.command("plot")(plot_cmd)
app.command("show")(show_cmd)


# ------------------------------------------------------------------------------------ entry

def _fail(message: str, code: int, rank_0_says_it: bool = False) -> int:
    """Say `message` as one `error:` line; return `code`. On a rank other than 0 that knows
    rank 0 says the same, wait for rank 0 instead (see RANK_0_FIRST), then exit quietly."""
    if rank_0_says_it:  # the launcher's SIGTERM, once rank 0 has exited, ends the wait
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(code))
        time.sleep(RANK_0_FIRST)
        return code
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    return code


# How long a rank other than 0 waits before it exits on bad input, so that the launcher, which
# stops every rank once one has exited, does not stop rank 0 before it has said why.
RANK_0_FIRST = 10.0


def _said_by_rank_0(exc: Exception) -> bool:
    """Under torchrun every rank runs the command: bad input (the same arguments, config and
    files on every rank) is said once, by rank 0, and the other ranks exit with its code
    quietly. A device that one rank lacks is its own error, said by that rank."""
    if "RANK" not in os.environ:  # no launcher: no need to import torch to find out
        return False
    from charrnn.training.distributed import is_main_process
    from charrnn.errors import DeviceError
    return not is_main_process() and (
        isinstance(exc, cli_errors.UsageError)
        or isinstance(exc, CharRNNError) and exc.exit_code == 2
        and not isinstance(exc, DeviceError))


_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENAMETOOLONG, errno.EEXIST, errno.EINVAL, errno.ELOOP}


def main(argv: Optional[list[str]] = None) -> None:
    """Run the CLI and turn every failure into one `error:` line and an exit code."""
    debug = os.environ.get("CHARRNN_DEBUG", "") not in ("", "0")
    command = typer.main.get_command(app)
    try:
        # make_context + invoke rather than app(): every failure is mapped here, in one place
        with command.make_context("charrnn", list(sys.argv[1:] if argv is None else argv)) as ctx:
            command.invoke(ctx)
        code = 0
    except typer.Exit as exc:
        code = getattr(exc, "exit_code", 0)
    except cli_errors.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.format_message() + "\n")
        code = 0
    except cli_errors.UsageError as exc:
        if debug:
            raise
        hint = f" (see charrnn {exc.ctx.command_path.removeprefix('charrnn ')} --help)" \
            if exc.ctx and exc.ctx.parent else " (see charrnn --help)"
        code = _fail(exc.format_message() + hint, 2, _said_by_rank_0(exc))
    except CharRNNError as exc:
        if debug:
            raise
        code = _fail(str(exc), exc.exit_code, _said_by_rank_0(exc))
    except (KeyboardInterrupt, typer.Abort):
        code = _fail("interrupted", 130)
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as the Python docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        # a path the user gave that cannot be written is bad input; a full disk is a failed run
        code = _fail(f"{where}{exc.strerror or exc}", 2 if exc.errno in _PATH_ERRNOS else 1)
    except Exception as exc:  # a bug: say so in one line, full traceback with CHARRNN_DEBUG=1
        if debug:
            raise
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or \
                "can't allocate memory" in str(exc):  # torch's CPU allocator says only this
            code = _fail("not enough memory for what was asked (ask for fewer samples, or a "
                         "smaller model or batch)", 2)
        else:
            code = _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with CHARRNN_DEBUG=1 "
                         f"for the traceback, and report it)", 1)
    sys.exit(code)
