"""Sampling throughput: charrnn.sampling.generate next to a bare inference loop.

The model is charrnn's LSTM 2x256 with random weights, and the bare model holds the very same
weights. Each call is timed by torch.utils.benchmark after two warm-up calls. The bare loop
carries the hidden state and draws with softmax + multinomial per step (charrnn draws by the
exponential race: the same distribution), with torch defaults and, on the CPU, with oneDNN
(mkldnn) off.
"""

from __future__ import annotations

import contextlib

from harness import bench
from harness.common import (ALPHABET, EMBED, LAYERS, PRIME, SAMPLE_HIDDEN, TEMPERATURE, Context,
                            log, median, row)


def lstm_pair(ctx: Context):
    """charrnn's LSTM 2x256 (random weights) and a bare model with the very same weights."""
    import torch
    from charrnn.config import ModelConfig
    from charrnn.models import build_model
    from charrnn.vocab import Vocab

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
    from charrnn.sampling import generate

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


@bench("sample")
def sample_vs_bare_loop(ctx: Context) -> list[dict]:
    """`sample b1 / b32 vs bare (...)` and `sample b32 / b1`: chars/s, medians of repeats."""
    model, bare, vocab = lstm_pair(ctx)
    variants = [("defaults", True)] + ([("mkldnn off", False)] if ctx.device.type == "cpu"
                                       else [])
    rows, results = [], {}
    for n, length in ((1, ctx.s["sample_len_1"]), (32, ctx.s["sample_len_32"])):
        # each measurement follows two warm-up calls (ctx.seconds): kernels, oneDNN primitives
        got = {"charrnn": []} | {v: [] for v, _ in variants}
        for r in range(ctx.s["sample_repeats"]):
            got["charrnn"].append(_charrnn_sample(ctx, model, vocab, n, length))
            for v, mk in variants:
                got[v].append(_bare_sample(ctx, bare, vocab, n, length, mk))
            log(f"sample batch {n} repeat {r + 1}/{ctx.s['sample_repeats']}: " +
                ", ".join(f"{k} {xs[-1]:,.0f}" for k, xs in got.items()) + " chars/s")
        results[n] = {k: median(v) for k, v in got.items()}
        c = results[n]["charrnn"]
        for v, _ in variants:
            rows.append(row("sample", f"sample b{n} vs bare ({v})", c, "chars/s",
                            reference=results[n][v], reference_name=f"bare loop, {v}",
                            ratio=c / results[n][v], target=(">=", 0.9),
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
