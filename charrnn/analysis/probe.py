"""What a model predicts at each character of a text, and what each of its units does there.

    p = probe_text(model, vocab, "To be, or not to be", torch.device("cpu"))
    p.logprobs[5], p.top(5)            # log p(text[5] | text[:5]); what it expected there
    p.units[(0, "f")]                  # forget gate of layer 0: (chars, hidden_size)

Units are what the model's family reports (its `read_units`): for rnn, lstm and gru, the hidden
state h of every layer and, for an LSTM, the cell c and the gates i, f, g, o.
The page `charrnn show --html` draws is `show_page.html` beside this file.
"""

from __future__ import annotations

import base64
import ctypes
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charrnn.errors import DataError
from charrnn.models.stepper import evaluating, one_thread
from charrnn.text.vocab import Vocab

TEMPLATE = Path(__file__).with_name("show_page.html")
CHUNK = 2048  # characters read at a time: the activations of one chunk are held, not the text's


@dataclass
class Probe:
    """Per character t: log p(text[t] | text[:t]) (nan for t = 0) and the likeliest choices."""
    text: str
    logprobs: torch.Tensor  # (T,) nats
    top_ids: torch.Tensor  # (T, K): what the model expected at t, likeliest first (row 0 unused)
    top_probs: torch.Tensor  # (T, K)
    chars: list[str]  # the vocab
    units: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # (T, H) each

    def top(self, t: int) -> list[tuple[str, float]]:
        return [(self.chars[i], p) for i, p in zip(self.top_ids[t].tolist(),
                                                   self.top_probs[t].tolist())]

    def report(self, top: int) -> dict:
        """What `charrnn show --json` prints: the number of characters (the first is read, not
        predicted), the mean loss (nats) and bits per character of the others, and a record
        per character with its `top` likeliest choices."""
        records = self.records()
        for r in records:
            r["top"] = r["top"] and r["top"][:top]
        loss = -float(self.logprobs[1:].mean())
        return {"chars": len(records), "loss": loss, "bpc": loss / math.log(2),
                "records": records}

    def records(self) -> list[dict]:
        """One JSON-ready record per character: char, logprob (nats; null for the first), top."""
        lps, ids, ps = self.logprobs.tolist(), self.top_ids.tolist(), self.top_probs.tolist()
        return [{"char": ch, "logprob": None if t == 0 else round(lps[t], 5),
                 "top": None if t == 0 else [[self.chars[i], round(p, 5)]
                                             for i, p in zip(ids[t], ps[t])]}
                for t, ch in enumerate(self.text)]


@torch.no_grad()
def probe_text(model, vocab: Vocab, text: str, device: torch.device, *, top_k: int = 5,
               units: bool = True) -> Probe:
    """Read `text` from a fresh state; log-probs, top-k choices and (optionally) every unit.

    The text is read CHUNK characters at a time with the model's state carried, so memory
    holds one chunk's activations and, per character, only what is returned (`units=False`:
    no units; the model's mode is left as it was)."""
    if len(text) < 2:
        raise DataError("the text must be at least 2 characters long (the first one is only "
                        "read, the others are predicted)")
    vocab.check(text, "the text")
    ids = vocab.encode(text)
    length, k = len(ids), min(top_k, len(vocab))
    found: dict[tuple[int, str], torch.Tensor] = {}
    logprobs = torch.full((length,), math.nan)
    top_ids = torch.zeros(length, k, dtype=vocab.dtype)  # row t: the prediction made at t - 1
    top_probs = torch.zeros(length, k)
    hidden = None
    with evaluating(model), one_thread(device):
        for start in range(0, length, CHUNK):
            end = min(start + CHUNK, length)
            chunk = ids[start:end].to(device, torch.long)
            logits, seen, hidden = model.read_units(chunk.unsqueeze(0), hidden, units=units)
            for key, values in seen.items():
                found.setdefault(key, torch.empty(length, values.size(-1)))[start:end] = \
                    values.cpu()
            logp = torch.log_softmax(logits.float(), dim=-1)  # prediction for t + 1
            top_lp, top_i = logp.topk(k, dim=-1)
            top_ids[start + 1:end + 1] = top_i[:length - start - 1].cpu().to(vocab.dtype)
            top_probs[start + 1:end + 1] = top_lp[:length - start - 1].exp().cpu()
            targets = ids[start + 1:end + 1].to(device, torch.long)[:, None]
            logprobs[start + 1:end + 1] = logp[:len(targets)].gather(1, targets)[:, 0].cpu()
    top_ids[0], top_probs[0] = top_ids[1], top_probs[1]  # row 0 is unused
    return Probe(text, logprobs, top_ids, top_probs, list(vocab.chars), found)


# ------------------------------------------------------------------------------ telling units

def text_features(text: str) -> dict[str, torch.Tensor]:
    """Simple per-character features a unit may track: inside quotes or brackets; position in
    the line."""
    inside, depth, quoted, column = [], 0, False, []
    col = 0
    for ch in text:  # the quote marks and brackets themselves count as inside
        closing = (ch == '"' and quoted) or ch in ")]}"
        if ch == '"' and not quoted:
            quoted = True
        elif ch in "([{":
            depth += 1
        inside.append(1.0 if quoted or depth else 0.0)
        if closing:
            quoted, depth = (False, depth) if ch == '"' else (quoted, max(0, depth - 1))
        column.append(float(col))
        col = 0 if ch == "\n" else col + 1
    return {"inside quotes or brackets": torch.tensor(inside),
            "position in line": torch.tensor(column)}


def telling_units(probe: Probe, count: int = 6) -> list[dict]:
    """Units worth a look: the largest variance of h, and the strongest correlation with each
    text feature. Each list is {"title", "units": [[layer, kind, unit, score], ...]}."""
    keys = list(probe.units)
    allv = torch.cat([probe.units[k] for k in keys], dim=1)  # (T, all units)
    index = [(layer, kind, u) for layer, kind in keys
             for u in range(probe.units[(layer, kind)].size(1))]
    var, mean = torch.var_mean(allv, dim=0, correction=0)
    lists = []

    def best(scores: torch.Tensor, title: str) -> None:
        order = scores.abs().nan_to_num(-1.0).argsort(descending=True)[:count].tolist()
        lists.append({"title": title, "units": [[*index[j], round(float(scores[j]), 3)]
                                                for j in order if not scores[j].isnan()]})

    is_h = torch.tensor([kind == "h" for _, kind, _ in index])
    best(var.masked_fill(~is_h, math.nan), "largest variance of h")
    for name, feature in text_features(probe.text).items():
        f = feature - feature.mean()
        if not f.abs().sum():
            continue  # the feature is constant in this text
        # Pearson r for every unit at once: one matrix-vector product over the text
        cov = (f @ allv) / len(f)
        corr = cov / (var.sqrt() * f.pow(2).mean().sqrt())
        best(corr.masked_fill(var < 1e-12, math.nan), f"correlation with {name}")
    return lists


# ------------------------------------------------------------------------------ the page

def _quantized(values: torch.Tensor) -> tuple[dict, str]:
    """(T, H) floats as unit-major bytes (base64), one a value, and each unit's range."""
    lo, hi = torch.aminmax(values, dim=0)
    q = ((values - lo) * (255 / (hi - lo).clamp_min(1e-12))).round_().to(torch.uint8)
    q = q.T.contiguous()
    meta = {"lo": [round(v, 4) for v in lo.tolist()], "hi": [round(v, 4) for v in hi.tolist()]}
    return meta, base64.b64encode(ctypes.string_at(q.data_ptr(), q.numel())).decode("ascii")


def page_html(probe: Probe, title: str, model_note: str) -> str:
    """One self-contained page (inline script, style and data; nothing fetched). Each block of
    units sits in its own element, decoded only when it is first shown."""
    units, blocks = [], []
    for n, ((layer, kind), values) in enumerate(probe.units.items()):
        meta, data = _quantized(values)
        units.append({"layer": layer, "kind": kind, "block": f"b{n}", **meta})
        blocks.append(f'<script type="application/octet-stream" id="b{n}">{data}</script>')
    data = {"title": title, "model": model_note, "records": probe.records(), "units": units,
            "telling": telling_units(probe) if probe.units else []}
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c")  # no "</script>" can end the data early
    fill = {"__DATA__": payload, "__TITLE__": html.escape(title, quote=False),
            "__BLOCKS__": "\n".join(blocks)}
    return re.sub("__DATA__|__TITLE__|__BLOCKS__", lambda m: fill[m.group(0)],
                  TEMPLATE.read_text(encoding="utf-8"))
