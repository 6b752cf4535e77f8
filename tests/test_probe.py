"""probe.py: per-character log-probs and top-k, units and LSTM gates recomputed from weights."""

from __future__ import annotations

import base64
import json
import math

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.models import build_model
from charrnn.analysis.probe import Probe, page_html, probe_text, telling_units, text_features
from charrnn.text.vocab import Vocab

TEXT = 'He said "to (be) or not" to be.\nThat is the question,\nwhether tis nobler.' * 3


def model_of(kind: str, layers: int = 2, hidden: int = 24):
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    cfg = ModelConfig(type=kind, embedding_dim=8, hidden_size=hidden, num_layers=layers,
                      dropout=0.2)
    return build_model(cfg, len(vocab)).eval(), vocab


def test_lstm_gates_rebuild_the_fused_modules_states():
    model, vocab = model_of("lstm")
    p = probe_text(model, vocab, TEXT, torch.device("cpu"))
    assert [key for key in p.units if key[0] == 0] == [(0, k) for k in "hcifgo"]
    ids = vocab.encode(TEXT).long().unsqueeze(0)
    with torch.no_grad():
        out, (h_n, c_n) = model.rnn(model.embed(ids))
    assert torch.allclose(p.units[(1, "h")], out[0], atol=1e-5)  # the stack's output
    for k in range(2):
        u = {kind: p.units[(k, kind)] for kind in "hcifgo"}
        assert torch.allclose(u["o"] * u["c"].tanh(), u["h"], atol=1e-5)  # h = o * tanh(c)
        assert torch.allclose(u["c"][-1], c_n[k, 0], atol=1e-5)  # the fused cell at the end
        assert torch.allclose(u["h"][-1], h_n[k, 0], atol=1e-5)
        assert ((u["f"] > 0) & (u["f"] < 1)).all() and (u["g"].abs() <= 1).all()


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_other_families_have_h_per_layer(kind):
    model, vocab = model_of(kind)
    p = probe_text(model, vocab, TEXT, torch.device("cpu"))
    assert list(p.units) == [(0, "h"), (1, "h")]
    with torch.no_grad():
        out, _ = model.rnn(model.embed(vocab.encode(TEXT).long().unsqueeze(0)))
    assert torch.allclose(p.units[(1, "h")], out[0], atol=1e-5)


def test_logprobs_and_top_k_are_the_models_predictions():
    model, vocab = model_of("lstm", layers=1)
    p = probe_text(model, vocab, TEXT, torch.device("cpu"), top_k=3, units=False)
    assert not p.units
    with torch.no_grad():
        logp = torch.log_softmax(model(vocab.encode(TEXT).long().unsqueeze(0))[0][0], -1)
    t = 7
    expected = logp[t - 1, vocab.chars.index(TEXT[t])]
    assert math.isnan(p.logprobs[0]) and p.logprobs[t] == pytest.approx(float(expected), 1e-5)
    probs, ids = logp[t - 1].exp().topk(3)
    assert p.top(t) == [(vocab.chars[i], pytest.approx(q, 1e-5))
                        for i, q in zip(ids.tolist(), probs.tolist())]
    rec = p.records()
    assert rec[0] == {"char": "H", "logprob": None, "top": None}
    assert rec[t]["char"] == TEXT[t] and len(rec[t]["top"]) == 3


def test_features_and_the_most_telling_units():
    text = 'ab "cd" (e\nf) gh\nxyz'
    f = text_features(text)
    assert f["inside quotes or brackets"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1,
                                                        0, 0, 0, 0, 0, 0, 0]
    assert f["position in line"].tolist()[9:13] == [9, 10, 0, 1]
    n = len(text)
    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(1)) * 0.1
    units = noise.clone()
    units[:, 2] += f["position in line"]  # unit 2 counts the column
    gates = noise.clone()
    gates[:, 1] += f["inside quotes or brackets"] * 0.5  # gate 1 opens inside quotes
    p = Probe(text, torch.zeros(n), torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1),
              ["a"], {(0, "h"): units, (0, "i"): gates})
    lists = {entry["title"]: entry["units"] for entry in telling_units(p, count=2)}
    assert lists["largest variance of h"][0][:3] == [0, "h", 2]
    assert len(lists["largest variance of h"]) == 2  # h units only, never the gates
    assert lists["correlation with position in line"][0][:3] == [0, "h", 2]
    assert lists["correlation with inside quotes or brackets"][0][:3] == [0, "i", 1]
    assert lists["correlation with inside quotes or brackets"][0][3] > 0.9


def test_the_page_is_self_contained_and_cannot_be_cut_short():
    text = 'said "x </script><script>alert(1)</script>" to ' + TEXT
    vocab = Vocab.from_text(text)
    model = build_model(ModelConfig(type="lstm", embedding_dim=4, hidden_size=8, num_layers=1),
                        len(vocab)).eval()
    page = page_html(probe_text(model, vocab, text, torch.device("cpu")), "a <title>", "lstm")
    assert page.count("</script>") == 2 + 6 and "<title>a &lt;title&gt;</title>" in page
    assert "http://" not in page and "https://" not in page and " src=" not in page
    data = json.loads(page.split('id="data">', 1)[1].split("</script>", 1)[0])
    assert "".join(r["char"] for r in data["records"]) == text
    assert [(u["layer"], u["kind"]) for u in data["units"]] == [(0, k) for k in "hcifgo"]
    assert len(data["units"][0]["lo"]) == 8
    block = page.split(f'id="{data["units"][0]["block"]}">', 1)[1].split("<", 1)[0]
    assert len(base64.b64decode(block)) == 8 * len(text)  # a byte a value


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_text_read_in_chunks_gives_what_one_piece_gives(kind, monkeypatch):
    from charrnn.analysis import probe

    model, vocab = model_of(kind)
    whole = probe_text(model, vocab, TEXT, torch.device("cpu"))
    monkeypatch.setattr(probe, "CHUNK", 7)  # TEXT is 216 characters: 31 chunks, the last short
    chunked = probe_text(model, vocab, TEXT, torch.device("cpu"))
    assert torch.allclose(whole.logprobs[1:], chunked.logprobs[1:], atol=1e-5)
    assert torch.equal(whole.top_ids, chunked.top_ids)
    assert whole.units.keys() == chunked.units.keys()
    for key, values in whole.units.items():
        assert torch.allclose(values, chunked.units[key], atol=1e-5), key
