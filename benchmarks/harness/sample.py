"""Sampling throughput: charrnn.generation.sampling.generate next to bare inference loops.

The model is charrnn's LSTM 2x256 with random weights, and the bare model holds the very same
weights. Each call is timed by torch.utils.benchmark after two warm-up calls. Two bare loops:

- what a user's loop gets: the nn.LSTM module called once per character, carrying the hidden
  state, softmax + torch.multinomial per step (charrnn draws by the exponential race: the same
  distribution), with torch defaults and, on the CPU, with oneDNN (mkldnn) off;
- for one sample, a step written as well as plain PyTorch allows (`LeanBareStep`): each layer's
  input and recurrent weights joined once (gate rows reordered so one sigmoid covers three
  gates), one `addmm` per layer into buffers made once, the states updated in place, the
  temperature folded into the head, and the Gumbel-max draw (the exponential race in log form)
  into a preallocated id buffer; oneDNN off. The ratio target of one sample applies to it.
"""

from __future__ import annotations

import contextlib

from harness import bench
from harness.common import (ALPHABET, EMBED, LAYERS, PRIME, SAMPLE_HIDDEN, TEMPERATURE, Context,
                            log, median, row)

LEAN = "lean"
LEAN_NAME = "bare lean step: joined weights, addmm per layer, buffers, Gumbel-max draw"


def lstm_pair(ctx: Context):
    """charrnn's LSTM 2x256 (random weights) and a bare model with the very same weights."""
    import torch
    from charrnn.config import ModelConfig
    from charrnn.models import build_model
    from charrnn.text.vocab import Vocab

    vocab = Vocab.from_text(ALPHABET)  # every character the text generator can write
    torch.manual_seed(1337)
    model = build_model(ModelConfig(type="lstm", embedding_dim=EMBED, hidden_size=SAMPLE_HIDDEN,
                                    num_layers=LAYERS, dropout=0.0), len(vocab)).to(ctx.device)
    model.eval()
    bare = ctx.BareLM("lstm", len(vocab), EMBED, SAMPLE_HIDDEN, LAYERS).to(ctx.device)
    bare.load_state_dict(model.state_dict())
    bare.eval()
    return model, bare, vocab


def _charrnn_sample(ctx: Context, model, vocab, n: int, length: int, fast: bool = True) -> float:
    from charrnn.generation.sampling import generate

    def run():
        steps = list(generate(model, vocab, [PRIME] * n, length, device=ctx.device,
                              temperature=TEMPERATURE, seed=1, fast=fast))
        texts = ["".join(parts) for parts in zip(*steps)]
        assert len(texts) == n and all(len(t) == length for t in texts)

    return n * length / ctx.seconds(run)


def _bare_sample(ctx: Context, bare, vocab, n: int, length: int, mkldnn: bool) -> float:
    import torch

    gen = torch.Generator(device=ctx.device)
    gen.manual_seed(1)
    prime = torch.tensor([vocab.index[c] for c in PRIME], device=ctx.device)

    def run():
        flags = (contextlib.nullcontext() if mkldnn or ctx.device.type != "cpu"
                 else torch.backends.mkldnn.flags(enabled=False))
        with torch.inference_mode(), flags:
            logits, h = bare(prime.unsqueeze(0).expand(n, -1))
            logits = logits[:, -1]
            out = []
            for _ in range(length):
                probs = torch.softmax(logits / TEMPERATURE, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)  # (n, 1)
                out.append(nxt)
                logits, h = bare(nxt, h)
                logits = logits[:, -1]
            ids = torch.cat(out, dim=1).tolist()
        texts = ["".join(vocab.chars[i] for i in r) for r in ids]
        assert len(texts) == n and all(len(t) == length for t in texts)

    return n * length / ctx.seconds(run)


class LeanBareStep:
    """A bare LSTM's sampling step as lean as plain PyTorch allows: `step(ids (1,)) -> logits
    (1, V)` (divided by `temperature`), the hidden state carried in buffers made once.

    The hidden states of all layers lie side by side in one row [x, h1, h2, ...], so layer k's
    [input, state] is one slice of it and one product with its joined weights gives every gate.
    """

    def __init__(self, bare, hidden, temperature: float = 1.0):
        import torch
        rnn = bare.rnn
        size, layers = rnn.hidden_size, rnn.num_layers
        width = bare.embed.weight.size(1)
        order = torch.cat([torch.arange(0, 2 * size), torch.arange(3 * size, 4 * size),
                           torch.arange(2 * size, 3 * size)])  # i, f, g, o -> i, f, o, g
        self.embed = bare.embed.weight
        self.layers = []
        h0, c0 = hidden
        self.row = h0.new_zeros(1, width + layers * size)
        self.x = self.row[:, :width]
        for k in range(layers):
            joined = torch.cat([getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")],
                               1)[order]
            bias = (getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}"))[order]
            start = 0 if k == 0 else width + (k - 1) * size
            h = self.row[:, width + k * size:width + (k + 1) * size]
            h.copy_(h0[k])
            gates = h0.new_empty(1, 4 * size)
            self.layers.append((self.row[:, start:width + (k + 1) * size], joined.t(),
                                bias.unsqueeze(0), gates, gates[:, :3 * size],
                                *gates.split(size, 1), h, c0[k].clone()))
        self.head_w = (bare.head.weight / temperature).t()
        self.head_b = (bare.head.bias / temperature).unsqueeze(0)
        self.logits = self.head_b.new_empty(1, self.head_b.size(1))

    def step(self, ids):
        import torch
        torch.index_select(self.embed, 0, ids, out=self.x)
        for inputs, weight, bias, gates, sig, i, f, o, g, h, c in self.layers:
            torch.addmm(bias, inputs, weight, out=gates)
            sig.sigmoid_()
            g.tanh_()
            c.mul_(f).addcmul_(i, g)
            torch.tanh(c, out=h).mul_(o)
        return torch.addmm(self.head_b, self.layers[-1][-2], self.head_w, out=self.logits)


def _lean_bare_sample(ctx: Context, bare, vocab, length: int) -> float:
    """One sample through `LeanBareStep`, the prime read by the module, oneDNN off on the CPU."""
    import torch

    gen = torch.Generator(device=ctx.device)
    gen.manual_seed(1)
    prime = torch.tensor([vocab.index[c] for c in PRIME], device=ctx.device)

    def run():
        flags = (torch.backends.mkldnn.flags(enabled=False) if ctx.device.type == "cpu"
                 else contextlib.nullcontext())
        with torch.inference_mode(), flags:
            logits, hidden = bare(prime.unsqueeze(0))
            stepper = LeanBareStep(bare, hidden, TEMPERATURE)
            logits = logits[:, -1] / TEMPERATURE
            ids = torch.empty(length, dtype=torch.long, device=ctx.device)
            noise = torch.empty_like(logits)
            for t in range(length):  # Gumbel-max: argmax(logits - log E), E ~ Exp(1)
                noise.exponential_(generator=gen).log_()
                torch.sub(logits, noise, out=noise)
                nxt = ids[t:t + 1]
                torch.argmax(noise, -1, out=nxt)
                logits = stepper.step(nxt)
            text = "".join(vocab.chars[i] for i in ids.tolist())
        assert len(text) == length

    return length / ctx.seconds(run)


@bench("sample")
def sample_vs_bare_loop(ctx: Context) -> list[dict]:
    """`sample b1 / b32 vs bare (...)`, `sample b1 vs lean bare step` and `sample b32 / b1`:
    chars/s, medians of repeats."""
    model, bare, vocab = lstm_pair(ctx)
    variants = [("defaults", True)] + ([("mkldnn off", False)] if ctx.device.type == "cpu"
                                       else [])
    rows, results = [], {}
    for n, length in ((1, ctx.s["sample_len_1"]), (32, ctx.s["sample_len_32"])):
        # each measurement follows two warm-up calls (ctx.seconds): kernels, oneDNN primitives
        refs = {v: (lambda mk=mk: _bare_sample(ctx, bare, vocab, n, length, mk))
                for v, mk in variants}
        if n == 1:
            refs[LEAN] = lambda: _lean_bare_sample(ctx, bare, vocab, length)
        got = {"charrnn": []} | {v: [] for v in refs}
        for r in range(ctx.s["sample_repeats"]):
            got["charrnn"].append(_charrnn_sample(ctx, model, vocab, n, length))
            for v, measure in refs.items():
                got[v].append(measure())
            log(f"sample batch {n} repeat {r + 1}/{ctx.s['sample_repeats']}: " +
                ", ".join(f"{k} {xs[-1]:,.0f}" for k, xs in got.items()) + " chars/s")
        results[n] = {k: median(v) for k, v in got.items()}
        c = results[n]["charrnn"]
        for v in refs:
            # One sample: the module loops are what a user's loop gets (no target), the target
            # applies to the lean bare step. A batch: the module loop is the reference.
            if v == LEAN:
                name, ref_name, target = "sample b1 vs lean bare step", LEAN_NAME, (">=", 0.9)
            elif n == 1:
                name, ref_name, target = (f"sample b1 vs bare ({v})",
                                          f"bare nn.LSTM loop, {v}: a user's loop", None)
            else:
                name, ref_name, target = (f"sample b{n} vs bare ({v})",
                                          f"bare nn.LSTM loop, {v}", (">=", 0.9))
            rows.append(row("sample", name, c, "chars/s", reference=results[n][v],
                            reference_name=ref_name, ratio=c / results[n][v], target=target,
                            samples={"charrnn": got["charrnn"], "reference": got[v]},
                            batch=n, length=length, model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}"))
    one, many = results[1]["charrnn"], results[32]["charrnn"]
    # No target: on the CPU a batch of 32 spends its step in the layers' products (442 of 640
    # µs here), so the ratio falls as the single step gets leaner.
    rows.append(row("sample", "sample b32 / b1 (charrnn)", many, "chars/s", reference=one,
                    reference_name="charrnn batch 1", ratio=many / one,
                    model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}"))
    return rows


@bench("sample")
def sample_one_lean_step(ctx: Context) -> list[dict]:
    """`sample b1 lean step`: one sample on the CPU, chars/s of generate's lean step (one
    batched product per layer, split over the threads), with the bare nn.LSTM loop (oneDNN off) as reference
    and target 5,000 chars/s; the module step (`fast=False`) is recorded beside them."""
    if ctx.device.type != "cpu":
        return []
    model, bare, vocab = lstm_pair(ctx)
    length = ctx.s["sample_len_1"]
    got = {"lean": [], "module": [], "bare": []}
    for r in range(ctx.s["sample_repeats"]):
        got["lean"].append(_charrnn_sample(ctx, model, vocab, 1, length))
        got["module"].append(_charrnn_sample(ctx, model, vocab, 1, length, fast=False))
        got["bare"].append(_bare_sample(ctx, bare, vocab, 1, length, mkldnn=False))
        log(f"sample b1 lean step repeat {r + 1}/{ctx.s['sample_repeats']}: " +
            ", ".join(f"{k} {xs[-1]:,.0f}" for k, xs in got.items()) + " chars/s")
    lean, bare_rate = median(got["lean"]), median(got["bare"])
    return [row("sample", "sample b1 lean step (cpu)", lean, "chars/s", reference=bare_rate,
                reference_name="bare nn.LSTM loop, mkldnn off", ratio=lean / bare_rate,
                target=(">=", 5000.0), target_on="value",
                samples={"charrnn": got["lean"], "reference": got["bare"]},
                module_step=median(got["module"]), batch=1, length=length,
                model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}")]


def _int8_twin(model, vocab, tmp) -> tuple[object, dict]:
    """`model` written as a checkpoint, exported as fp32 and as int8 (`charrnn export
    --quantize int8`), and the int8 file loaded back into a copy of it; the files' bytes."""
    import copy
    import os

    from charrnn.checkpoint import load_checkpoint, save_checkpoint
    from charrnn.export import export_model

    source = os.path.join(tmp, "source.pt")
    shape = {"type": "lstm", "embedding_dim": EMBED, "hidden_size": SAMPLE_HIDDEN,
             "num_layers": LAYERS, "dropout": 0.0}
    save_checkpoint({"config": {"model": shape}, "vocab": vocab.chars,
                     "model": model.state_dict(), "step": 0}, source)
    paths = {mode: os.path.join(tmp, f"{mode}.pt") for mode in ("fp32", "int8")}
    export_model(source, paths["fp32"])
    export_model(source, paths["int8"], quantize="int8")
    twin = copy.deepcopy(model)
    twin.load_state_dict(load_checkpoint(paths["int8"])["model"])
    return twin, {mode: os.path.getsize(path) for mode, path in paths.items()}


@bench("sample")
def sample_int8_vs_fp32(ctx: Context) -> list[dict]:
    """`export int8 / fp32 size`: bytes of the int8 export of the LSTM 2x256 next to the fp32
    one (target <= 0.30); `sample b1 int8 vs fp32 (cpu)`: one sample's chars/s from the int8
    file (loaded, so turned back into fp32) next to the fp32 model (target >= 0.9)."""
    model, _, vocab = lstm_pair(ctx)
    int8, sizes = _int8_twin(model, vocab, ctx.tmp)
    shape = f"lstm {LAYERS}x{SAMPLE_HIDDEN}"
    rows = [row("sample", "export int8 / fp32 size", sizes["int8"], "bytes",
                reference=sizes["fp32"], reference_name="fp32 export",
                ratio=sizes["int8"] / sizes["fp32"], target=("<=", 0.30), model=shape)]
    if ctx.device.type != "cpu":
        return rows
    length = ctx.s["sample_len_1"]
    got = {"int8": [], "fp32": []}
    for r in range(ctx.s["sample_repeats"]):  # alternately, so both see the same load
        got["int8"].append(_charrnn_sample(ctx, int8, vocab, 1, length))
        got["fp32"].append(_charrnn_sample(ctx, model, vocab, 1, length))
        log(f"sample b1 int8 vs fp32 repeat {r + 1}/{ctx.s['sample_repeats']}: " +
            ", ".join(f"{k} {xs[-1]:,.0f}" for k, xs in got.items()) + " chars/s")
    quant, plain = median(got["int8"]), median(got["fp32"])
    return rows + [row("sample", "sample b1 int8 vs fp32 (cpu)", quant, "chars/s",
                       reference=plain, reference_name="the same model in fp32",
                       ratio=quant / plain, target=(">=", 0.9),
                       samples={"charrnn": got["int8"], "reference": got["fp32"]}, batch=1,
                       length=length, model=shape)]
