"""Fine-tuning: start a new run from another run's weights (`charrnn train --init-from`).

The model's shape comes from the source checkpoint, and its vocab is kept: characters of the
new text that it lacks are added (new embedding and output rows, initialised to the mean of the
existing rows, so a new character starts as an average one) unless `data.unknown: error`.
The corpus is re-encoded to the merged vocab. Step, optimizer and schedule start afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.checkpoint import load_checkpoint, resolve_checkpoint
from charrnn.text.data import Corpus, encode_to
from charrnn.errors import ConfigError, DataError
from charrnn.models import family_of
from charrnn.text.vocab import Vocab, describe_chars

_SHAPE = ("type", "embedding_dim", "hidden_size", "num_layers")


@dataclass
class Start:
    """What a fine-tuning run starts from."""

    weights: dict        # a state dict for the merged vocab
    corpus: Corpus       # the new text, encoded to the merged vocab
    source: str          # the checkpoint's path
    added: list[str]     # characters the source vocab lacked

    @property
    def note(self) -> str:
        added = f"; added {describe_chars(self.added)} to its vocab" if self.added else ""
        return f"starting from the weights of {self.source} (step 0, a new optimizer){added}"


def _shape(model: dict) -> str:
    return (f"{model['type']} {model['num_layers']} x {model['hidden_size']} (embedding "
            f"{model['embedding_dim']})")


def check_shape(source_model: dict, cfg_model) -> None:
    """The config must ask for the source model's shape (dropout may differ)."""
    asked = {k: getattr(cfg_model, k) for k in _SHAPE}
    if any(asked[k] != source_model[k] for k in _SHAPE):
        raise ConfigError(f"--init-from: the checkpoint's model is {_shape(source_model)} but the "
                          f"config asks for {_shape(asked)}; set the model section to match "
                          f"(e.g. use the source run's config.yaml)")


def shape_overrides(init_from: str) -> list[str]:
    """`--set` overrides that give a config the checkpoint's model shape (for a run without a
    config file)."""
    model = load_checkpoint(resolve_checkpoint(init_from))["config"]["model"]
    return [f"model.{key}={model[key]}" for key in _SHAPE]


def prepare(init_from: str, cfg, corpus: Corpus) -> Start:
    """Load the source checkpoint, merge vocabs and transplant its weights."""
    state = load_checkpoint(resolve_checkpoint(init_from))
    check_shape(state["config"]["model"], cfg.model)
    old = state["vocab"]
    added = sorted(set(corpus.vocab.chars) - set(old))
    if added and cfg.data.unknown == "error":
        raise DataError(f"--init-from: {corpus.source} holds {len(added)} character(s) that the "
                        f"model lacks: {describe_chars(added)} (data.unknown: error; set it to "
                        f"add to add them)")
    merged = Vocab(sorted(set(old) | set(corpus.vocab.chars)))
    weights = dict(state["model"])
    where = torch.tensor([merged.index[c] for c in old])
    for name in family_of(cfg.model.type).vocab_rows:
        rows = weights[name]
        grown = rows.mean(0, keepdim=True).repeat(len(merged), *([1] * (rows.dim() - 1)))
        grown[where] = rows
        weights[name] = grown
    return Start(weights, encode_to(corpus, merged, cfg.data.val_fraction), state["path"], added)


