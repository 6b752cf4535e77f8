"""What a resumed run must share with the run it continues: settings, vocab and training text.

A checkpoint records a fingerprint of the text it was trained on (its length and SHA-256) and the
window layout of its batches. A resume on another text would read other windows with a stale
hidden state, so it is refused, unless the user names a new text on purpose (a new `data.path`
or `data.corpus`): then it goes on with a warning, from an empty hidden state.
"""

from __future__ import annotations

from pathlib import Path

import torch

from charrnn.config import Config
from charrnn.checkpoint import load_checkpoint
from charrnn.errors import CharRNNError, RunDirError
from charrnn.training.state import Progress
from charrnn.text.fingerprint import describe_change, same_text
from charrnn.text.vocab import Vocab, describe_chars

# Settings a resumed run may change; any other difference is refused (it cannot apply).
RESUMABLE = {
    "data.path", "data.corpus", "data.encoding_errors",
    "train.max_steps", "train.max_minutes", "train.lr", "train.min_lr_ratio", "train.lr_schedule",
    "train.warmup_steps", "train.eval_every", "train.eval_batches", "train.save_every",
    "train.log_every", "train.skip_nonfinite", "train.out_dir", "train.device",
    "train.precision", "train.threads", "train.grad_clip", "train.weight_decay",
    "sample.length", "sample.temperature", "sample.top_k", "sample.top_p",
    "train.sample_every", "sample.preview_length", "sample.preview_prime", "train.plan",
    "train.log_to",
}


def _flatten(cfg_dict: dict) -> dict:
    return {f"{s}.{k}": v for s, body in cfg_dict.items() for k, v in body.items()}


def check_resume_compatible(old: dict, new: Config) -> list[str]:
    """Refuse changes that cannot apply to a saved run; return the ones that can (to log).

    A key that the saved config lacks (added after the run was saved) has its default, as when
    the run's config is read back.
    """
    before = {**_flatten(Config().to_dict()), **_flatten(old)}
    after = _flatten(new.to_dict())
    changed = sorted(k for k in after if before.get(k) != after[k])
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        k = refused[0]
        raise RunDirError(f"cannot resume with {k} = {after[k]!r}: the saved run has {k} = "
                          f"{before.get(k)!r}, and it cannot change mid-run (start a new run "
                          f"with another --out instead)")
    return [f"{k}: {before.get(k)!r} -> {after[k]!r}" for k in changed]


def check_not_behind(state: dict, out: Path) -> None:
    """Refuse to resume, in its own folder, from a checkpoint older than the folder's last.pt:
    that would overwrite the later last.pt and cut metrics.jsonl back."""
    last = Path(out) / "last.pt"
    if Path(state["path"]).resolve() == last.resolve() or not last.is_file():
        return
    try:
        reached = load_checkpoint(last)["step"]
    except CharRNNError:
        return
    if reached > state["step"]:
        raise RunDirError(f"{state['path']} is at step {state['step']:,}, but {last} is at step "
                          f"{reached:,}: resuming from it here would overwrite that last.pt and "
                          f"cut metrics.jsonl back. Continue the run with --resume {out}, branch "
                          f"into a new folder with --out NEW_DIR, or go back here with --force")


def check_budget(state: dict, cfg: Config) -> str | None:
    """The budget already spent ("max_steps" or "max_minutes": nothing to do), or None; a
    max_steps below the step reached is an error. `max_minutes` counts the training time of
    every session of the run."""
    t, done = cfg.train, Progress.read(state)
    step = done.step
    if t.max_steps < step:
        raise RunDirError(f"cannot resume {state['path']} with max_steps {t.max_steps:,} "
                          f"(--max-steps): the run has already reached step {step:,}; give a "
                          f"larger budget to continue it")
    if step == t.max_steps:
        return "max_steps"
    if t.max_minutes is not None and done.elapsed_before >= t.max_minutes * 60:
        return "max_minutes"
    return None


def best_of_branch(state: dict) -> Path | None:
    """The checkpoint holding the best validation loss that a branch from checkpoint `state`
    starts with: the best.pt beside it, if that is no later than `state` and holds its best
    loss (a later best.pt, from after the branch point, is not the branch's)."""
    best, branch = Path(state["path"]).with_name("best.pt"), Progress.read(state)
    if branch.best_val_loss is None or not best.is_file():
        return None
    if best.resolve() == Path(state["path"]).resolve():
        return best
    try:
        saved = load_checkpoint(best)
    except CharRNNError:
        return None
    before = Progress.read(saved)
    same = before.step <= branch.step and before.best_val_loss == branch.best_val_loss
    return best if same else None


def check_vocab(saved: list[str], vocab: Vocab, source: str) -> None:
    """Refuse a text whose characters differ from the run's, naming the characters."""
    if Vocab(saved) == vocab:
        return
    extra, lacking = set(vocab.chars) - set(saved), set(saved) - set(vocab.chars)
    parts = ([f"{source} has {describe_chars(extra)}, which the run's vocab lacks"] if extra else [])
    parts += [f"the run's vocab has {describe_chars(lacking)}, which {source} lacks"] if lacking else []
    raise RunDirError(f"cannot resume: the characters of {source} differ from the saved run's "
                      f"vocab ({len(vocab)} vs {len(saved)}): {'; '.join(parts)}")


def _same_path(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None or "-" in (a, b):
        return False
    return Path(a).resolve() == Path(b).resolve()


def check_same_text(state: dict, cfg: Config, data: dict, source: str) -> str | None:
    """Compare the text and window layout with the checkpoint's (`data`: this run's record).

    Returns None when the run may go on as it was, or a warning when it goes on from an empty
    hidden state (the text was named anew, or the layout changed); raises RunDirError for a
    text that differs without being named anew.
    """
    saved = state.get("data")
    if not saved:  # written before checkpoints recorded their text
        return None
    unchanged = same_text(saved, data)
    if unchanged and saved.get("layout") == data["layout"]:
        return None
    if unchanged:
        return "the window layout changed, so training goes on from an empty hidden state"
    old = state["config"]["data"]
    named_anew = (old.get("corpus") != cfg.data.corpus
                  or not _same_path(old.get("path"), cfg.data.path))
    change = describe_change(saved, data)
    if not named_anew:
        raise RunDirError(f"cannot resume: {source} is not the text this run was trained on "
                          f"({change}): restore that text; or, to go on with this one, give it "
                          f"under another path with --data PATH; or start a new run with "
                          f"another --out")
    return (f"training goes on with another text, {source} ({change}), from an empty hidden "
            f"state")


def inexact_resume(device: torch.device, cfg: Config) -> list[str]:
    """Why a run resumed on `device` with `cfg` will not continue exactly as if it had never
    stopped (README "Resuming"), if it will not: warnings for the resume log."""
    m, t = cfg.model, cfg.train
    limits = []
    if device.type == "cuda" and m.dropout > 0 and m.num_layers > 1:
        limits.append("this resumed run is not expected to continue exactly as if it had never "
                      "stopped: on CUDA, cuDNN draws the dropout between recurrent layers "
                      "(model.dropout > 0, model.num_layers > 1) from a state of its own, which "
                      "restoring the RNG state re-seeds (on the CPU it continues exactly)")
    if t.max_minutes:
        limits.append("this resumed run does not continue exactly as if it had never stopped: "
                      "with a time budget (train.max_minutes) it follows the clock, which "
                      "decides when it stops and, with a cosine schedule, its learning rate")
    return limits
