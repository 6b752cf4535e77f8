"""TrainState: the one place a run's state becomes a checkpoint and comes back from one."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn import checkpoint
from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.config import Config, config_from_dict
from charrnn.text.data import StreamBatcher
from charrnn.device import grad_scaler
from charrnn.training.distributed import Group
from charrnn.models import build_model
from charrnn.training.schedule import Plan
from charrnn.training.state import TrainState, Window
from charrnn.text.vocab import Vocab

CPU = torch.device("cpu")
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def small_config() -> Config:
    cfg = Config()
    return replace(cfg, model=replace(cfg.model, embedding_dim=4, hidden_size=8, num_layers=2),
                   train=replace(cfg.train, batch_size=2, seq_len=5))


def new_state(cfg: Config, vocab: Vocab, seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = build_model(cfg.model, len(vocab))
    ids = torch.arange(41) % len(vocab)
    return TrainState(cfg=cfg, vocab=vocab, data={"chars": 41, "sha256": "0" * 64},
                      batcher=StreamBatcher(ids, cfg.train.batch_size, cfg.train.seq_len),
                      model=model, optimizer=torch.optim.AdamW(model.parameters()),
                      scaler=grad_scaler(CPU, "fp32"))


def documented_keys() -> set[str]:
    """The keys checkpoint.py's docstring lists (its indented paragraph), notes left out."""
    listing = next(p for p in checkpoint.__doc__.split("\n\n") if p.startswith("    "))
    return {key.strip() for key in re.sub(r"\([^)]*\)", "", listing).split(",")}


def test_the_checkpoint_docstring_lists_every_key_a_train_state_saves(tmp_path):
    save_checkpoint(new_state(small_config(), Vocab(list("abcd"))).checkpoint(Group(CPU)),
                    tmp_path / "last.pt")
    assert set(torch.load(tmp_path / "last.pt", weights_only=True)) == documented_keys()


def test_a_train_state_comes_back_from_its_checkpoint(tmp_path):
    cfg, vocab = small_config(), Vocab(list("abcd"))
    state = new_state(cfg, vocab)
    x, y, _ = state.batcher.batch(0)
    logits, state.hidden = state.model(x, None)
    F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1)).backward()
    state.optimizer.step()
    state.step, state.best_val_loss, state.val_loss, state.train_loss = 7, 1.25, 1.5, 1.75
    state.skipped_steps, state.window, state.elapsed_before = 2, Window(3.0, 2), 10.0
    state.plan, state.run_started, state.stopped_by = Plan(4, 1.0, 0.5), 123.0, "max_minutes"
    save_checkpoint(state.checkpoint(Group(CPU)), tmp_path / "last.pt")
    draws = torch.rand(3)  # what the generator gives next, as saved

    back = new_state(cfg, vocab, seed=1)
    assert back.restore(load_checkpoint(tmp_path / "last.pt"), Group(CPU)) == []
    for name in ("step", "best_val_loss", "val_loss", "skipped_steps", "plan", "run_started"):
        assert getattr(back, name) == getattr(state, name), name
    assert (back.window.loss, back.window.steps, back.window.step0) == (3.0, 2, 7)
    assert back.elapsed_before >= 10.0 and back.saved_step == 7
    assert back.resumed_from == str(tmp_path / "last.pt")
    assert back.train_loss is None and back.stopped_by is None  # this session's: none yet
    assert torch.equal(torch.rand(3), draws)
    assert all(torch.equal(a.detach(), b) for a, b in zip(state.hidden, back.hidden))
    for a, b in zip(state.model.parameters(), back.model.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(state.optimizer.state[a]["exp_avg"], back.optimizer.state[b]["exp_avg"])


def test_a_version_1_checkpoint_restores_with_the_defaults_of_the_keys_it_lacks():
    saved = load_checkpoint(FIXTURES / "v1.pt")
    assert "train_window" not in saved and "run_started" not in saved  # what is tested here
    state = new_state(config_from_dict(saved["config"]), Vocab(saved["vocab"]))
    assert state.restore(saved, Group(CPU)) == []
    assert (state.step, state.window.steps, state.skipped_steps) == (0, 0, 0)
    assert state.plan is None and state.run_started is None and state.hidden is None
