"""The model-family contract: what a family must give, what it may leave to the defaults."""

from __future__ import annotations

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.models import ModelFamily, build_model, map_hidden, register_model
from charrnn.vocab import Vocab


class _Plain(ModelFamily):
    """An embedding and a head around a tanh recurrence; no fast step, no units."""

    def __init__(self, cfg, vocab_size):
        super().__init__(cfg, vocab_size)
        self.embed = torch.nn.Embedding(vocab_size, cfg.hidden_size)
        self.mix = torch.nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.head = torch.nn.Linear(cfg.hidden_size, vocab_size)

    def initial_state(self, batch, device=None):
        return torch.zeros(1, batch, self.config.hidden_size, device=device)

    def forward(self, idx, hidden=None):
        h = self.initial_state(idx.size(0), idx.device)[0] if hidden is None else hidden[0]
        outs = []
        for x in self.embed(idx).unbind(1):
            h = torch.tanh(x + self.mix(h))
            outs.append(h)
        return self.head(torch.stack(outs, 1)), h[None]

    @classmethod
    def estimate_activations(cls, cfg, vocab_size, rows, seq_len):
        return 4 * rows * seq_len * (cfg.hidden_size + vocab_size)


def test_a_family_without_a_fast_step_samples_beams_and_shows_through_its_forward():
    from charrnn.beam import beam_search, log_prob
    from charrnn.probe import probe_text
    from charrnn.sampling import check_batch_fits, generate

    torch.manual_seed(0)
    vocab, cpu = Vocab(list("abcdefgh")), torch.device("cpu")
    model = _Plain(ModelConfig(hidden_size=12), len(vocab)).eval()
    assert model.estimate_parameters(model.config, 8) == sum(p.numel()
                                                             for p in model.parameters())
    check_batch_fits(model, len(vocab), 4, 10, "four samples")
    text = "".join(c for (c,) in generate(model, vocab, ["ab"], 15, device=cpu, greedy=True))
    want = "ab"
    with torch.no_grad():
        for _ in range(15):
            want += vocab.chars[int(model(vocab.encode(want).long()[None])[0][0, -1].argmax())]
    assert text == want[2:]
    (best, score), = beam_search(model, vocab, "ab", 6, width=3, device=cpu)
    assert score == pytest.approx(log_prob(model, vocab, "ab", best, cpu), abs=1e-4)
    p = probe_text(model, vocab, "abcabcab", cpu)
    assert not p.units and torch.isfinite(p.logprobs[1:]).all()


def test_a_family_must_give_the_whole_interface():
    class Partial(ModelFamily):
        def forward(self, idx, hidden=None):
            return idx, hidden

    with pytest.raises(TypeError, match="does not define estimate_activations, initial_state"):
        register_model("partial")(Partial)
    with pytest.raises(TypeError, match="not a subclass of"):
        register_model("builder")(lambda cfg, vocab_size: None)
    assert isinstance(build_model(ModelConfig(type="gru", hidden_size=4), 5), ModelFamily)


def test_one_helper_maps_a_hidden_state_of_any_form():
    h, c = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    assert map_hidden(torch.neg, None) is None
    assert torch.equal(map_hidden(torch.neg, h), -h)
    pair = map_hidden(lambda t: t[:, :1], [h, c])
    assert isinstance(pair, tuple) and [t.shape for t in pair] == [(2, 1, 4)] * 2
    both = map_hidden(lambda *t: torch.cat(t, 1), (h, c), (c, h))
    assert [t.shape for t in both] == [(2, 6, 4)] * 2 and torch.equal(both[0][:, 3:], c)
