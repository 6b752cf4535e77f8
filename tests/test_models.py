"""Every registered family: shapes, carried state, gradients, and a sane loss at init."""

import math

import pytest
import torch
import torch.nn.functional as F

from charrnn.config import ModelConfig
from charrnn.errors import ModelError
from charrnn.models import build_model, list_models, map_hidden, register_model

VOCAB = 23


def test_registry_lists_the_fused_families():
    assert {"rnn", "lstm", "gru"} <= set(list_models())


def test_unknown_family_lists_registered_names():
    with pytest.raises(ModelError, match=r"'lstn' \(did you mean 'lstm'\?\); registered: gru"):
        build_model(ModelConfig(type="lstn"), VOCAB)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("lstm")(lambda cfg, v: None)


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_state_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(type=name, embedding_dim=8, hidden_size=16, num_layers=2,
                                    dropout=0.1), VOCAB)
    assert isinstance(model.rnn, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU))  # fused modules
    idx = torch.randint(VOCAB, (3, 7))
    logits, hidden = model(idx)
    assert logits.shape == (3, 7, VOCAB) and torch.isfinite(logits).all()
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx.reshape(-1))
    assert abs(loss.item() - math.log(VOCAB)) < 0.5  # about ln|V| at init
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"
    # carrying the state changes the next prediction; detaching keeps its values
    model.eval()
    fresh, _ = model(idx[:, :1])
    carried, _ = model(idx[:, :1], map_hidden(torch.Tensor.detach, hidden))
    assert not torch.allclose(fresh, carried)
