"""Run settings: dataclasses for the data / model / train / sample sections, loaded from YAML.

Precedence is defaults < YAML file < `--set section.key=value` overrides. One strict loader
rejects unknown keys (suggesting the nearest valid one), wrong types and out-of-range values,
and reports every problem at once in a single `ConfigError`. No torch import here.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from charrnn.errors import ConfigError
from charrnn.fsutil import write_text_atomic
from charrnn.text.source import has_glob


INT64_MAX = 2**63 - 1
SEED_MAX = 2**64 - 1  # torch.manual_seed takes up to this
# Upper bounds of the size keys, far above any model or batch that fits in memory (whether one
# does is checked before it is built: models.check_training_fits), so that a typo is an error
# naming the key rather than an overflow inside torch.
WIDTH_MAX, LAYERS_MAX, ROWS_MAX = 2**16, 1024, 2**20


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         min_open: bool = False, max_open: bool = False, choices: tuple | None = None) -> Any:
    """A dataclass field that carries its help text and allowed range."""
    meta = {"help": help, "min": min, "max": max, "min_open": min_open, "max_open": max_open,
            "choices": choices}
    if isinstance(default, list):  # a list of choices: each config gets a list of its own
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    path: Optional[str] = _opt(None, "text file, folder, glob pattern or - for stdin (from "
                                     "this file's folder)")
    corpus: Optional[str] = _opt(None, "a known corpus fetched by `charrnn data get` (instead of path)")
    val_fraction: float = _opt(0.1, "last fraction of the text held out for validation",
                               min=0.0, max=1.0, max_open=True)
    encoding_errors: str = _opt("strict", "what to do with bytes that are not UTF-8",
                                choices=("strict", "replace"))
    unknown: str = _opt("add", "with --init-from: characters the model lacks are added or refused",
                        choices=("add", "error"))


@dataclass
class ModelConfig:
    type: str = _opt("lstm", "model family from the registry (rnn, lstm, gru, ...)")
    embedding_dim: int = _opt(64, "size of the character embedding", min=1, max=WIDTH_MAX)
    hidden_size: int = _opt(256, "units per recurrent layer", min=1, max=WIDTH_MAX)
    num_layers: int = _opt(2, "stacked recurrent layers", min=1, max=LAYERS_MAX)
    dropout: float = _opt(0.0, "dropout between layers and before the output head",
                          min=0.0, max=1.0, max_open=True)


@dataclass
class TrainConfig:
    batch_size: int = _opt(64, "parallel streams per step", min=1, max=ROWS_MAX)
    seq_len: int = _opt(100, "characters per stream per step (truncated BPTT length)", min=1,
                        max=ROWS_MAX)
    max_steps: int = _opt(2000, "optimizer steps in total", min=0)
    max_minutes: Optional[float] = _opt(None, "stop cleanly after this many minutes of training",
                                        min=0.0, min_open=True)
    optimizer: str = _opt("adamw", "adam or adamw", choices=("adam", "adamw"))
    lr: float = _opt(2.0e-3, "peak learning rate", min=0.0, min_open=True)
    min_lr_ratio: float = _opt(0.1, "cosine schedule ends at lr * min_lr_ratio", min=0.0, max=1.0)
    weight_decay: float = _opt(0.0, "decoupled weight decay (adamw) or L2 (adam)", min=0.0)
    grad_clip: Optional[float] = _opt(5.0, "clip the gradient norm to this (null: no clipping)",
                                      min=0.0, min_open=True)
    lr_schedule: str = _opt("cosine", "constant or cosine (both after warm-up)",
                            choices=("constant", "cosine"))
    warmup_steps: int = _opt(0, "linear warm-up steps", min=0)
    eval_every: int = _opt(200, "evaluate on the validation split every N steps", min=1)
    eval_batches: Optional[int] = _opt(None, "validation windows per eval (null: the whole split)",
                                       min=1)
    save_every: Optional[int] = _opt(None, "write last.pt every N steps (null: at each eval)", min=1)
    log_every: int = _opt(50, "log the training loss every N steps", min=1)
    skip_nonfinite: int = _opt(0, "skip up to N steps with a non-finite loss before stopping", min=0)
    out_dir: Optional[str] = _opt(None, "run directory (null: runs/<config name>)")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: str = _opt("auto", "auto (fp32; on CUDA with TF32), fp32, fp16 or bf16 (CUDA only)",
                          choices=("auto", "fp32", "fp16", "bf16"))
    threads: Optional[int] = _opt(None, "CPU threads (null: the count measured fastest for "
                                        "this model here, cached; see --reprobe)", min=1,
                                  max=1024)  # torch crashes on a pool of 100,000
    seed: int = _opt(1337, "seed for weights, dropout and sampling", min=0, max=SEED_MAX)
    plan: bool = _opt(False, "plan the model and train keys this config leaves unset from the "
                             "text, the measured speed and the budget (charrnn plan shows how)")
    sample_every: Optional[int] = _opt(None, "a short sample every N steps (null: every "
                                             "eval_every; 0: none)", min=0)
    log_to: list[str] = _opt([], "where the metrics go besides metrics.jsonl: [tensorboard] "
                                 "(pip install 'charrnn[tensorboard]')",
                             choices=("tensorboard",))


@dataclass
class SampleConfig:
    length: int = _opt(500, "characters to generate after the prime", min=0)
    temperature: float = _opt(0.8, "softmax temperature (lower: safer, higher: wilder)",
                              min=0.0, min_open=True)
    top_k: Optional[int] = _opt(None, "sample only from the k likeliest characters", min=1)
    top_p: Optional[float] = _opt(None, "sample from the smallest set with this much probability",
                                  min=0.0, max=1.0, min_open=True)
    preview_length: int = _opt(200, "characters of each sample shown while training", min=0)
    preview_prime: Optional[str] = _opt(None, "prime of those samples (null: a random character)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys that no longer exist, and why: a config that sets one is refused with the reason; a saved
# run's config that holds one (an older checkpoint) is read without it (see without_removed).
REMOVED = {
    "train.compile": "torch.compile leaves nn.LSTM / GRU / RNN uncompiled (it breaks the graph "
                     "there), so it gained nothing; delete the key",
}

_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                    "sample": SampleConfig}


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(options)})"


def _base_type(tp: Any) -> tuple[type, bool]:
    """The plain type of a field's (resolved) annotation and whether it may be null."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _check_value(key: str, value: Any, f: dataclasses.Field,
                 hint: Any) -> tuple[Any, str | None]:
    """Coerce and check one value; return (value, problem or None)."""
    tp, nullable = _base_type(hint)
    meta = f.metadata
    if value is None:
        return (None, None) if nullable else (value, f"{key}: must not be null")
    if typing.get_origin(tp) is list:
        return _check_list(key, value, meta["choices"])
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string; take it as the number it clearly is
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
    if not ok:
        hint = " (write floats like 1.0e-3)" if tp is float else ""
        return value, f"{key}: expected {tp.__name__}, got {value!r}{hint}"
    if tp is float and not math.isfinite(value):
        return value, f"{key}: must be a finite number, got {value!r}"
    if meta.get("choices") and value not in meta["choices"]:
        return value, f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}"
    lo, hi = meta.get("min"), meta.get("max")
    if tp is int and hi is None:
        hi = INT64_MAX  # counts and sizes end up in 64-bit integers (torch, numpy)
    if lo is not None and (value < lo or (meta["min_open"] and value == lo)):
        op = ">" if meta["min_open"] else ">="
        return value, f"{key}: must be {op} {lo:g}, got {value!r}" if isinstance(lo, float) \
            else f"{key}: must be {op} {lo}, got {value!r}"
    if hi is not None and (value > hi or (meta["max_open"] and value == hi)):
        op = "<" if meta["max_open"] else "<="
        return value, f"{key}: must be {op} {hi:g}, got {value!r}" if isinstance(hi, float) \
            else f"{key}: must be {op} {hi}, got {value!r}"
    return value, None


def _check_list(key: str, value: Any, choices: tuple) -> tuple[Any, str | None]:
    """A list of some of `choices`, each once; one name alone stands for a list of it."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        return value, f"{key}: expected a list of {', '.join(choices)}, got {value!r}"
    wrong = [v for v in items if v not in choices]
    if wrong:
        return value, f"{key}: {wrong[0]!r} is not one of {', '.join(choices)}"
    return list(dict.fromkeys(items)), None


def config_from_dict(raw: Any, source: str = "config", overrides: list[str] = ()) -> Config:
    """Build and validate a Config from nested mappings (read from `source`) with `--set`
    overrides applied, reporting every problem at once, each under the source it came from."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections "
                          f"({', '.join(_SECTION_CLASSES)}), got {type(raw).__name__}")
    from_set = _override_keys(overrides)  # and the sections that only --set names:
    from_set |= {key.partition(".")[0] for key in from_set
                 if not isinstance(raw.get(key.partition(".")[0]), dict)}
    raw = apply_overrides(raw, list(overrides))
    problems: dict[str, list[str]] = {source: [], "--set": []}
    sections: dict[str, Any] = {}
    for name, body in raw.items():
        if name not in _SECTION_CLASSES:
            problems["--set" if name in from_set else source].append(
                f"unknown section '{name}'{_suggest(str(name), list(_SECTION_CLASSES))}")
            continue
        if body is None:
            body = {}
        if not isinstance(body, dict):
            problems[source].append(f"{name}: expected a mapping of keys, got {body!r}")
            continue
        cls = _SECTION_CLASSES[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in body.items():
            found = problems["--set" if f"{name}.{key}" in from_set else source]
            if f"{name}.{key}" in REMOVED:
                found.append(f"{name}.{key} was removed: {REMOVED[f'{name}.{key}']}")
                continue
            if key not in fields:
                found.append(f"unknown key '{name}.{key}'{_suggest(str(key), list(fields))}")
                continue
            value, problem = _check_value(f"{name}.{key}", value, fields[key], hints[key])
            if problem:
                found.append(problem)
            values[key] = value
        sections[name] = values
    if any(problems.values()):
        raise ConfigError("; ".join(f"{where}: " + "; ".join(found)
                                    for where, found in problems.items() if found))
    return Config(**{name: _SECTION_CLASSES[name](**sections.get(name, {}))
                     for name in _SECTION_CLASSES})


def without_removed(raw: dict) -> dict:
    """A saved config without the keys that were removed since it was written."""
    if not isinstance(raw, dict):
        return raw
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for key in REMOVED:
        section, name = key.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def check_flag(flag: str, key: str, value: Any) -> None:
    """Check a command-line flag's value as its `section.key` would be, naming the flag."""
    section, name = key.split(".")
    cls = _SECTION_CLASSES[section]
    field_ = next(f for f in dataclasses.fields(cls) if f.name == name)
    _, problem = _check_value(flag, value, field_, typing.get_type_hints(cls)[name])
    if problem:
        raise ConfigError(problem)


def full_key(name: str) -> str:
    """`section.key` of a key named alone (`lr` -> `train.lr`: no two sections share a key
    name) or in full; a name that no section has is a ConfigError suggesting the nearest."""
    if "." in name:
        return name  # checked where it is applied
    keys = {f.name: f"{section}.{f.name}" for section, cls in _SECTION_CLASSES.items()
            for f in dataclasses.fields(cls)}
    if name not in keys:
        raise ConfigError(f"unknown setting '{name}'{_suggest(name, sorted(keys))}")
    return keys[name]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-3` -> (['train', 'lr'], 0.001); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. --set train.lr=1e-3")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must be SECTION.KEY, e.g. model.hidden_size")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def _override_keys(overrides: list[str]) -> set[str]:
    """The `section.key` names that `--set` overrides set."""
    return {".".join(parse_override(text)[0]) for text in overrides}


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of `raw` with each `section.key=value` applied."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        body = merged.setdefault(section, {})
        if not isinstance(body, dict):
            body = merged[section] = {}
        body[key] = value
    return merged


def set_keys(path: str | Path | None, overrides: list[str] = ()) -> frozenset[str]:
    """The `section.key`s a user set: in the config file, by --set or by a flag (which the
    command line turns into overrides). A planned run leaves them as they are."""
    raw = read_yaml(path) if path is not None else {}
    keys = {f"{section}.{key}" for section, body in raw.items() if isinstance(body, dict)
            for key in body}
    return frozenset(keys | {".".join(parse_override(text)[0]) for text in overrides})


def read_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a config file" if path.is_dir() else "config file not found"
        raise ConfigError(f"{what}: {path} (give the path of a YAML config, "
                          f"e.g. configs/tiny.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(_SECTION_CLASSES)}), "
                          f"got a {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Load a YAML config, apply overrides, validate, and make the data path absolute.

    The file's `data.path` is relative to the config file (then to the current folder, where
    older configs expect it); a path given as an override is relative to the current folder.
    """
    raw = read_yaml(path)
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        raw = {**raw, "data": {**data, "path": resolve_relative(data["path"], Path(path).parent)}}
    both = f"{path} and --set" if _override_keys(overrides) & {"data.path", "data.corpus"} \
        else str(path)  # the source of a data.path / data.corpus conflict
    return _finish(config_from_dict(raw, source=str(path), overrides=list(overrides)),
                   Path(path).stem, both)


def default_config(overrides: list[str] = ()) -> Config:
    """Every default with overrides applied (`charrnn train --data my.txt`, no CONFIG).

    The run directory is named after the text: runs/my for my.txt.
    """
    cfg = config_from_dict({}, source="the command line", overrides=list(overrides))
    stem = re.sub(r"[^\w.-]", "", Path(cfg.data.path or "").stem) if cfg.data.path != "-" else ""
    return _finish(cfg, stem or "run", "the command line")


def _finish(cfg: Config, name: str, source: str) -> Config:
    if cfg.data.corpus and cfg.data.path:
        raise ConfigError(f"{source}: data.corpus ({cfg.data.corpus}) and data.path "
                          f"({cfg.data.path}) are both set: keep one of them")
    if cfg.train.out_dir is None:
        cfg.train.out_dir = str(Path("runs") / name)
    if cfg.data.path not in (None, "-"):
        cfg.data.path = os.path.abspath(Path(cfg.data.path).expanduser())
    return cfg


def resolve_relative(path: str, base: Path) -> str:
    """A relative data path from `base` (a config's folder) if it is there, else from the
    current folder if it is there, else from `base`; absolute in every case but `-`."""
    if path == "-" or Path(path).expanduser().is_absolute():
        return path
    for root in (base, Path.cwd()):
        candidate = os.path.abspath(root / path)
        if Path(candidate).exists() or (has_glob(path) and glob.glob(candidate, recursive=True)):
            return candidate
    return os.path.abspath(base / path)


def reference() -> str:
    """Every key of every section with its default and help, as YAML (the README's block).

    Generated from the dataclasses, so the documented keys cannot drift from the real ones:
    `python -m charrnn.config` prints it.
    """
    lines = []
    for name, cls in _SECTION_CLASSES.items():
        lines.append(f"{name}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            value = yaml.safe_dump(default, default_flow_style=True).removesuffix("\n...\n")
            lines.append(f"  {f.name}: {value.strip()}".ljust(28) + f"# {f.metadata['help']}")
    return "\n".join(lines) + "\n"


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the run directory's `config.yaml`)."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


if __name__ == "__main__":
    print(reference(), end="")
