"""The Python API: load a model, generate and score text, train a run.

    import charrnn
    model = charrnn.load("runs/demo")                  # a run directory or a checkpoint file
    text = "".join(model.generate("sharks", length=200, seed=1))
    model.score("sharks feed on tuna.").bpc           # as `charrnn eval`
    model.info                                         # as `charrnn info --json`
    run = charrnn.train("configs/tiny.yaml", out="runs/mine", max_steps=500)

The commands of the CLI are written on top of these. Nothing here prints or exits: errors are
CharRNNError kinds (charrnn.errors). Nothing here changes state of the process that the caller
did not ask for: no signal handler is installed, and torch's thread count (and its global
random generator) are as they were after each call. torch is imported on first use, not when
this module is.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from charrnn.config import SEED_MAX, full_key
from charrnn.errors import DataError, SamplingError


@dataclass
class Score:
    """How well a model predicts a text (`Model.score`)."""

    loss: float  # mean cross-entropy, nats per predicted character (as `charrnn eval`)
    bpc: float  # bits per character
    perplexity: float
    chars: int  # characters predicted: all but the first of the text scored
    skipped: int  # characters left out as not in the vocab (unknown="skip")
    # log p(text[t] | text[:t]) in nats for each character t of the text scored (less the
    # skipped ones), read as one stream from a fresh state (as `charrnn show`); nan for t = 0
    log_probs: Any = None

    def summary(self) -> dict:
        """The figures without the per-character log-probabilities (`charrnn eval --json`)."""
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity,
                "chars": self.chars, "skipped": self.skipped}


class Model:
    """A trained model ready to generate and score text; made by `charrnn.load`.

    Attributes: `model` (the torch module, in eval mode), `vocab`, `config` (the run's
    resolved Config), `device`, `path` (the checkpoint read) and `step` (its training step).
    """

    def __init__(self, model, vocab, config, device, path: Path, state: dict, parameters: int):
        self.model, self.vocab, self.config, self.device = model, vocab, config, device
        self.path, self.step = Path(path), state["step"]
        self._state, self._parameters = state, parameters  # the checkpoint less its tensors

    def __repr__(self) -> str:
        m = self.config.model
        return (f"<charrnn.Model {m.type} {m.num_layers} x {m.hidden_size}, "
                f"{len(self.vocab)} characters, step {self.step}: {self.path}>")

    @property
    def trained_on(self) -> Optional[dict]:
        """The fingerprint of the training text the checkpoint records (None if older)."""
        return self._state.get("data")

    @property
    def info(self) -> dict:
        """What `charrnn info --json` reports: model, sizes, parameters, vocab size, step,
        losses, why the run stopped, and the config."""
        return describe_checkpoint(self.path, self._state, self._parameters)[0]

    def generate(self, prime: str = "", length: Optional[int] = None, *,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, greedy: bool = False, seed: Optional[int] = None,
                 stop: Sequence[str] = ()) -> Iterator[str]:
        """Continue `prime`, yielding the generated characters one at a time (the prime itself
        is not repeated), as `charrnn sample` does with the same options and seed.

        Unset options take the run's `sample` settings (length, temperature, top_k, top_p);
        `greedy` always takes the likeliest character (temperature, top_k and top_p are then
        not used); `stop` texts end the text at the first
        one generated (included). Without a seed, each call draws a new sample.
        """
        steps = self.generate_many([prime], length, temperature=temperature, top_k=top_k,
                                   top_p=top_p, greedy=greedy, seed=seed, stop=stop)
        return (ch for (ch,) in steps)

    def generate_many(self, primes: Sequence[str], length: Optional[int] = None, *,
                      temperature: Optional[float] = None, top_k: Optional[int] = None,
                      top_p: Optional[float] = None, greedy: bool = False,
                      seed: Optional[int] = None,
                      stop: Sequence[str] = ()) -> Iterator[list[str]]:
        """Continue several primes as one batch (a prime given twice gives two samples):
        yield, per step, the next character of each ("" for one that a stop text has ended).
        Options as for `generate`; they and the primes are checked at once, not when the
        first character is asked for."""
        from charrnn.generation.sampling import check_options, generate

        length, temperature, top_k, top_p = self.sample_options(length, temperature, top_k, top_p)
        check_options(length, temperature, top_k, top_p, greedy)
        if seed is not None and not 0 <= seed <= SEED_MAX:
            raise SamplingError(f"seed must be in 0..{SEED_MAX}, got {seed}")
        for prime in dict.fromkeys(primes):
            self.vocab.check(prime, f"the prime {prime!r}")
        return generate(self.model, self.vocab, list(primes), length, device=self.device,
                        temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                        seed=seed, stop=stop)

    def sample_options(self, length: Optional[int] = None, temperature: Optional[float] = None,
                       top_k: Optional[int] = None, top_p: Optional[float] = None) -> tuple:
        """(length, temperature, top_k, top_p) of a sample: those given, and the run's `sample`
        settings for those that are None."""
        s = self.config.sample
        return (s.length if length is None else length,
                s.temperature if temperature is None else temperature,
                s.top_k if top_k is None else top_k, s.top_p if top_p is None else top_p)

    def beam(self, prime: str, width: int, length: Optional[int] = None, *, results: int = 1,
             stop: Sequence[str] = (), length_penalty: float = 0.0) -> list[tuple[str, float]]:
        """Beam search (`charrnn sample --beam`): the `results` likeliest continuations of
        `prime` with their summed log-probabilities, best first."""
        from charrnn.generation.beam import beam_search
        return beam_search(self.model, self.vocab, prime, self.sample_options(length)[0],
                           width=width, device=self.device, results=results, stop=stop,
                           length_penalty=length_penalty)

    def score(self, text: str, *, unknown: str = "error", log_probs: bool = True) -> Score:
        """Loss, bits per character and perplexity of `text` (as `charrnn eval TEXT_FILE`),
        and the log-probability of each of its characters (`log_probs=False`: not computed).

        `unknown="skip"` leaves out the characters the model has never seen (else they are a
        DataError)."""
        from charrnn.analysis.evaluate import evaluate_text
        from charrnn.analysis.probe import probe_text

        if unknown not in ("error", "skip"):
            raise DataError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        result = Score(**evaluate_text(self.model, self.vocab, text, self.device,
                                       unknown=unknown))
        if log_probs:
            kept = text.translate({ord(c): None for c in self.vocab.missing(text)})
            with _global_state_kept():  # probe builds layers, whose initial weights draw on it
                result.log_probs = probe_text(self.model, self.vocab, kept, self.device,
                                              top_k=1, units=False).logprobs
        return result


def load(path: str | os.PathLike, *, device: str = "auto") -> Model:
    """The model of a checkpoint: a `.pt` file, or a run directory (its best.pt, else its
    last.pt), on `device` (auto, cpu, cuda, cuda:N or mps).

    The checkpoint is read into CPU memory and only the model moves to the device: the
    optimizer state (twice the weights for Adam) is dropped, never copied to a GPU.
    """
    from charrnn.checkpoint import load_checkpoint, resolve_checkpoint
    from charrnn.config import config_from_dict
    from charrnn.device import resolve_device
    from charrnn.errors import CheckpointError
    from charrnn.models import build_model
    from charrnn.text.vocab import Vocab

    path = resolve_checkpoint(path)
    dev = resolve_device(device)
    state = load_checkpoint(path, map_location="cpu")
    state.pop("optimizer", None)
    weights = state.pop("model")
    cfg = config_from_dict(state["config"], source=f"{path} (config)")
    with _global_state_kept():  # the initial weights, overwritten at once, draw on torch's RNG
        model = build_model(cfg.model, len(state["vocab"]))
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: its weights do not fit its model config "
                              f"({str(exc).splitlines()[0]})") from None
    model.to(dev).eval()
    for name in ("hidden", "rng", "rank_rng", "scaler"):  # training state: not needed here
        state.pop(name, None)
    return Model(model, Vocab(state["vocab"]), cfg, dev, path, state,
                 sum(t.numel() for t in weights.values()))


def describe_checkpoint(path: Path, state: dict, parameters: int) -> tuple[dict, Optional[dict]]:
    """What `charrnn info` reports of a checkpoint (`state`, which need not hold its
    tensors), and, for a best.pt saved mid-run, the state of the last.pt beside it where that
    run has ended or gone on since (else None)."""
    model_cfg = state["config"]["model"]
    info = {
        "path": str(path), "model": model_cfg["type"],
        "embedding_dim": model_cfg["embedding_dim"], "hidden_size": model_cfg["hidden_size"],
        "num_layers": model_cfg["num_layers"], "dropout": model_cfg["dropout"],
        "parameters": parameters, "vocab_size": len(state["vocab"]), "step": state["step"],
        "max_steps": state["config"]["train"]["max_steps"],
        "best_val_loss": state.get("best_val_loss"), "val_loss": state.get("val_loss"),
        "train_loss": state.get("train_loss"), "format_version": state["format_version"],
        "charrnn_version": state.get("charrnn_version"), "config": state["config"],
        "stopped_by": state.get("stopped_by"),
        "kind": state.get("kind", "checkpoint"),
        "quantization": state.get("quantization", {}).get("mode"),
    }
    run_end = _run_end(path, state)
    if run_end is not None:  # a best.pt snapshot of a run that has gone on (or ended) since
        info["run_stopped_by"], info["run_step"] = run_end.get("stopped_by"), run_end["step"]
    return info, run_end


def _run_end(ckpt: Path, state: dict) -> Optional[dict]:
    """For a best.pt saved mid-run, the state of last.pt beside it if that run has ended or
    gone on to a later step (as after a kill: --resume continues from last.pt)."""
    from charrnn.checkpoint import load_checkpoint
    from charrnn.errors import CheckpointError

    last = Path(ckpt).with_name("last.pt")
    if state.get("stopped_by") or Path(ckpt).name != "best.pt" or not last.is_file():
        return None
    try:
        end = load_checkpoint(last)
    except CheckpointError:
        return None
    return end if end.get("stopped_by") or end["step"] != state["step"] else None


def train(config_or_path=None, /, *, out: Optional[str | os.PathLike] = None,
          resume: Optional[str | os.PathLike] = None,
          init_from: Optional[str | os.PathLike] = None, force: bool = False,
          on_event: Optional[Callable[[str, dict], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None, reprobe: bool = False,
          **overrides: Any):
    """Train a run as `charrnn train` does; return its result (charrnn.training.loop.TrainResult:
    run_dir, step, train_loss, val_loss, best_val_loss, stopped_by, elapsed_seconds).

    `config_or_path`: a YAML config file, a Config or a dict of sections; None trains a
    planned run on `data=`, or continues the run given by `resume=` with its saved config.
    `overrides` set config keys by name (`max_steps=500`, `hidden_size=64`,
    `log_to=["tensorboard"]`, or in full as `**{"train.lr": 1e-3}`); `data=PATH` is the text
    to train on, as `--data`. `out`, `resume`, `init_from`, `force` and `reprobe` are the
    flags of the same names; `on_event(kind, info)` receives the progress that the CLI shows,
    and `should_stop()`, polled between steps, ends the run cleanly (saving last.pt) when it
    returns True.
    """
    from charrnn.device import cuda_index
    from charrnn.training.distributed import run_device
    from charrnn.training.loop import train as train_run

    path = lambda p: None if p is None else str(p)  # noqa: E731
    cfg, user_keys = run_config(config_or_path, _override_texts(overrides), resume=path(resume),
                                init_from=path(init_from))
    device = run_device(cfg.train.device)
    with _global_state_kept(cuda_devices=[cuda_index(device)] if device.type == "cuda" else []):
        return train_run(cfg, resume=path(resume), run_dir=path(out), force=force,
                         init_from=path(init_from), on_event=on_event, should_stop=should_stop,
                         reprobe=reprobe, user_keys=user_keys)


def run_config(config, sets: list[str], *, resume: Optional[str] = None,
               init_from: Optional[str] = None):
    """The config of a run to train and the keys its user set: a new run's from `config` (see
    `train_config`), or with no config and `resume`, the saved run's; `sets` (`--set` texts)
    applied. A new run's config is read without importing torch (so the CLI reports its errors
    at once); its logging destinations are checked before anything of the run is touched."""
    if config is None and resume is not None:
        from charrnn.training.loop import config_from_checkpoint
        cfg, user_keys = config_from_checkpoint(resume, sets), frozenset()
    else:
        cfg, user_keys = train_config(config, sets, init_from)
    from charrnn.training.rundir import check_log_to
    check_log_to(cfg.train.log_to)
    return cfg, user_keys


def _override_texts(overrides: dict) -> list[str]:
    """Keyword overrides as `--set` texts (`data` is the --data flag: data.path, no corpus)."""
    sets = []
    for name, value in overrides.items():
        if name == "data":
            name, value = "data.path", os.path.abspath(value) if str(value) != "-" else "-"
            sets.append("data.corpus=null")
        value = str(value) if isinstance(value, os.PathLike) else value
        sets.append(f"{full_key(name)}={json.dumps(value)}")
    return sets


def train_config(config, sets: list[str], init_from: str | None):
    """The config of a new run and the keys its user set. With no config the run is planned
    (train.plan, unless --set says otherwise) and, with init_from, takes the checkpoint's model
    shape. `config` is a YAML file, or a Config or dict (every key of which counts as set)."""
    from charrnn.config import Config, config_from_dict, default_config, load_config, set_keys
    if isinstance(config, dict):
        config = config_from_dict(config, source="the config given")
    if isinstance(config, Config):
        sets = [f"{section}.{key}={json.dumps(value)}"
                for section, body in config.to_dict().items() for key, value in body.items()] \
            + sets
        return default_config(sets), set_keys(None, sets)
    if config is None and init_from is not None:  # no config: the checkpoint's model shape
        from charrnn.training.finetune import shape_overrides
        sets = shape_overrides(init_from) + sets
    if config is None:
        sets = ["train.plan=true"] + sets
    cfg = load_config(config, sets) if config is not None else default_config(sets)
    return cfg, set_keys(config, [s for s in sets if s != "train.plan=true"])


@contextlib.contextmanager
def _global_state_kept(cuda_devices: Sequence[int] = ()):
    """torch's thread count, float32 matmul precision and global random generators as they
    were, whatever training set them to: the CPU's, the CUDA devices' a run uses
    (`cuda_devices`; a run on the CPU does not touch them) and the current CUDA device's where
    CUDA is initialized. Other GPUs are left alone: asking for their state would start CUDA
    on each."""
    import torch
    threads, matmul = torch.get_num_threads(), torch.get_float32_matmul_precision()
    devices = set(cuda_devices) | ({torch.cuda.current_device()} if torch.cuda.is_initialized()
                                   else set())
    try:
        with torch.random.fork_rng(devices=sorted(devices)):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(matmul)
