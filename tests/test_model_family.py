"""The model-family contract is real: a family that is not built into charrnn, found through the
`charrnn.models` entry-point group, trains, resumes exactly, samples, beams, evaluates, exports
and shows through the CLI; a checkpoint of a family that is not installed is a clear error."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from charrnn.checkpoint import load_checkpoint, save_checkpoint
from charrnn.config import ModelConfig
from charrnn.models import ModelFamily, build_model, map_hidden, register_model
from charrnn.text.vocab import Vocab

from conftest import FOODCHAIN, ROOT, TINY, run_cli

# A layer-normalised LSTM in plain torch, as a package of its own would hold it. It gives only
# what the contract asks (no fast step, no estimate of its parameters), and its units for show.
PLUGIN = textwrap.dedent('''
    import torch
    from torch import nn

    from charrnn.models.family import ModelFamily


    class LayerNormLSTM(ModelFamily):
        def __init__(self, cfg, vocab_size):
            super().__init__(cfg, vocab_size)
            e, h = cfg.embedding_dim, cfg.hidden_size
            self.embed = nn.Embedding(vocab_size, e)
            self.cells = nn.ModuleList(nn.Linear((e if k == 0 else h) + h, 4 * h)
                                       for k in range(cfg.num_layers))
            self.norms = nn.ModuleList(nn.LayerNorm(4 * h) for _ in range(cfg.num_layers))
            self.head = nn.Linear(h, vocab_size)

        def initial_state(self, batch, device=None):
            h = torch.zeros(self.config.num_layers, batch, self.config.hidden_size,
                            device=device)
            return h, torch.zeros_like(h)

        def forward(self, idx, hidden=None):
            x = self.embed(idx)
            h, c = self.initial_state(idx.size(0), idx.device) if hidden is None else hidden
            h, c, outs = list(h.unbind(0)), list(c.unbind(0)), []
            for t in range(idx.size(1)):
                inp = x[:, t]
                for k, (cell, norm) in enumerate(zip(self.cells, self.norms)):
                    i, f, g, o = norm(cell(torch.cat([inp, h[k]], -1))).chunk(4, -1)
                    c[k] = f.sigmoid() * c[k] + i.sigmoid() * g.tanh()
                    h[k] = inp = o.sigmoid() * c[k].tanh()
                outs.append(inp)
            return self.head(torch.stack(outs, 1)), (torch.stack(h), torch.stack(c))

        @classmethod
        def estimate_activations(cls, cfg, vocab_size, rows, seq_len):
            per_char = cfg.embedding_dim + 12 * cfg.num_layers * cfg.hidden_size + 3 * vocab_size
            return 2 * rows * seq_len * per_char

        def read_units(self, idx, hidden=None, units=True):
            logits, found = [], {}
            for t in range(idx.size(1)):
                out, hidden = self(idx[:, t:t + 1], hidden)
                logits.append(out[0, 0])
                for k in range(self.config.num_layers):
                    for kind, state in zip("hc", hidden):
                        found.setdefault((k, kind), []).append(state[k, 0])
            found = {key: torch.stack(v) for key, v in found.items()} if units else {}
            return torch.stack(logits), found, hidden
''')
NAME = "lnlstm"


@pytest.fixture
def plugin(tmp_path) -> Path:
    """A folder holding an installed package (code and dist-info metadata) that declares the
    family `lnlstm` in the `charrnn.models` entry-point group."""
    site = tmp_path / "site"
    (site / "charrnn_lnlstm").mkdir(parents=True)
    (site / "charrnn_lnlstm" / "__init__.py").write_text(PLUGIN)
    info = site / "charrnn_lnlstm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: charrnn-lnlstm\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[charrnn.models]\n{NAME} = charrnn_lnlstm:LayerNormLSTM\n")
    return site


def _losses(run: Path) -> list:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


@pytest.fixture
def installed(plugin, monkeypatch) -> Path:
    """The plugin's package installed in this process too (on sys.path); what registering it
    does here is undone after the test."""
    from charrnn import device
    from charrnn.models import registry
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(device, "available_cores", lambda: 1)  # tiny ops: one thread
    yield plugin
    sys.modules.pop("charrnn_lnlstm", None)


@pytest.mark.slow
def test_a_family_from_an_installed_package_works_through_the_cli(installed, tmp_path, cli):
    def ok(*args):
        code, out, err = cli(*args)
        assert code == 0, (args, err)
        return out

    train = ["train", TINY, "--threads", "1", "-q", "--set", f"model.type={NAME}",
             "--set", "model.embedding_dim=8", "--set", "model.hidden_size=16",
             "--set", "model.num_layers=2", "--set", "train.batch_size=4",
             "--set", "train.seq_len=16", "--set", "train.log_every=1",
             "--set", "train.eval_every=5", "--set", "train.lr_schedule=constant",
             "--set", "sample.preview_length=20"]
    a, b = tmp_path / "a", tmp_path / "b"
    ok(*train, "--out", a, "--max-steps", "12")
    ok(*train, "--out", b, "--max-steps", "6")
    ok("train", "--resume", b, "--max-steps", "12", "-q")
    assert [s for s, _ in _losses(a)] == list(range(1, 13)) and _losses(a) == _losses(b)
    state, wb = torch.load(a / "last.pt", weights_only=True), _weights(b)
    assert state["config"]["model"]["type"] == NAME  # by its registry name alone
    assert state["model"].keys() == wb.keys()
    assert all(torch.equal(state["model"][k], wb[k]) for k in wb)

    # sampling steps through the family's forward with the state carried: the greedy text is
    # what reading the whole text again at every character predicts
    greedy = ["--prime", "sharks", "--length", "12", "--greedy", "-q"]
    text = ok("sample", "-c", a / "last.pt", *greedy)
    from charrnn_lnlstm import LayerNormLSTM
    model = LayerNormLSTM.build(ModelConfig(**state["config"]["model"]), len(state["vocab"]))
    model.load_state_dict(state["model"])
    vocab, want = Vocab(state["vocab"]), "sharks"
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model.eval()(vocab.encode(want).long()[None])
            want += vocab.chars[int(logits[0, -1].argmax())]
    assert text.rstrip("\n") == want

    beams = json.loads(ok("sample", "-c", a, "--prime", "sharks", "-n", "10", "--beam", "3",
                          "-N", "2", "--json", "-q"))
    assert len(beams) == 2 and beams[0]["score"] >= beams[1]["score"]
    scored = json.loads(ok("eval", "-c", a, FOODCHAIN, "--json"))
    assert 0 < scored["bpc"] < 8
    ok("export", a / "last.pt", "--out", tmp_path / "m.pt", "-q")
    shown = json.loads(ok("show", "-c", a, "--text", "sharks feed on tuna", "--json",
                          "--html", tmp_path / "p.html"))
    assert shown["chars"] == 19 and shown["bpc"] > 0
    page = (tmp_path / "p.html").read_text()
    assert all(f'"layer":{k},"kind":"{kind}"' in page for k in (0, 1) for kind in "hc")

    # a fresh interpreter finds the family through the package's metadata on PYTHONPATH
    proc = run_cli("sample", "-c", str(tmp_path / "m.pt"), *greedy,
                   env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(installed)])})
    assert proc.returncode == 0 and proc.stdout == text, proc.stderr


def test_a_checkpoint_of_a_family_that_is_not_installed_is_an_error_naming_it(tmp_path, cli):
    state = load_checkpoint(Path(__file__).parent / "fixtures" / "v1.pt")
    state["config"]["model"]["type"] = "os.system"  # a name, never a module to import
    del state["path"]
    ckpt = tmp_path / "last.pt"
    save_checkpoint(state, ckpt)
    for args in (["sample", "-c", ckpt], ["eval", "-c", ckpt], ["show", "-c", ckpt, "--text",
                 "ab"], ["train", "--resume", ckpt], ["export", ckpt, "--out", tmp_path / "m"]):
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert "model family 'os.system' is not installed" in err and str(ckpt) in err, err


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
    from charrnn.generation.beam import beam_search, log_prob
    from charrnn.analysis.probe import probe_text
    from charrnn.generation.sampling import check_batch_fits, generate

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
