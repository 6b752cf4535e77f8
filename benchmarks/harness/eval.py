"""Evaluation throughput: charrnn.analysis.evaluate.evaluate_text next to a bare no-grad loop with the
same 16 streams x 256 characters, on generated text."""

from __future__ import annotations

from harness import bench
from harness.common import LAYERS, SAMPLE_HIDDEN, Context, log, median, row, write_text
from harness.sample import lstm_pair


def _bare_eval(ctx: Context, bare, table: bytes, text: str, vocab_size: int,
               streams: int = 16, seq_len: int = 256) -> float:
    import torch
    import torch.nn.functional as F

    def run():
        with torch.no_grad():
            ids = torch.frombuffer(bytearray(text.encode("ascii").translate(table)),
                                   dtype=torch.uint8)
            n = max(1, min(streams, (len(ids) - 1) // 1024))
            per = (len(ids) - 1) // n
            xs = ids[: n * per].view(n, per)
            ys = ids[1: n * per + 1].view(n, per)
            total, h = torch.zeros((), dtype=torch.float64, device=ctx.device), None
            for start in range(0, per, seq_len):
                x = xs[:, start:start + seq_len].long().to(ctx.device)
                y = ys[:, start:start + seq_len].long().to(ctx.device)
                with ctx.autocast():
                    logits, h = bare(x, h)
                total += F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1),
                                         reduction="sum").double()
            total.item()

    return (len(text) - 1) / ctx.once(run)


@bench("eval")
def eval_vs_bare_loop(ctx: Context) -> list[dict]:
    """`eval <size> MB`: chars/s over a generated text, alternating the two, medians."""
    from charrnn.analysis.evaluate import evaluate_text

    model, bare, vocab = lstm_pair(ctx)
    size = ctx.s["eval_chars"]
    text = write_text(ctx.tmp / "eval.txt", size, seed=3).read_text(encoding="ascii")
    table = bytes(vocab.index.get(chr(b), 0) for b in range(256))
    a, b = [], []
    evaluate_text(model, vocab, text[:20_000], ctx.device)  # warm-up
    _bare_eval(ctx, bare, table, text[:20_000], len(vocab))
    for r in range(ctx.s["eval_repeats"]):
        result = {}
        seconds = ctx.once(lambda: result.update(evaluate_text(model, vocab, text, ctx.device)))
        a.append(result["chars"] / seconds)
        b.append(_bare_eval(ctx, bare, table, text, len(vocab)))
        log(f"eval repeat {r + 1}/{ctx.s['eval_repeats']}: charrnn {a[-1]:,.0f} "
            f"bare {b[-1]:,.0f} chars/s")
    ca, cb = median(a), median(b)
    return [row("eval", f"eval {size / 1e6:g} MB", ca, "chars/s", reference=cb,
                reference_name="bare no-grad loop, same streams", ratio=ca / cb,
                samples={"charrnn": a, "reference": b}, chars=size,
                model=f"lstm {LAYERS}x{SAMPLE_HIDDEN}", streams=16, seq_len=256)]
