"""Training throughput: charrnn.training.loop.train next to a bare PyTorch loop of the same model.

Both sides are seeded alike, use a constant learning rate and take the same number of steps,
so they compute the very same losses (the row records both sides' mean loss over the last
window; a warning says if they part). charrnn's rate is read from its own `step` events after a
warm-up of one log window, so no eval or checkpoint is inside the timed window. charrnn logs
(and so reads its losses to the host) once per window of several steps, as a run does, not at
every step.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from harness import bench
from harness.common import (BATCH, EMBED, GRAD_CLIP, LAYERS, LR, SEQ, Context, log, median,
                            row)


def _charrnn_train_once(ctx: Context, cell: str, hidden: int, window: int, steps: int,
                        out_dir: Path) -> tuple[float, float]:
    """chars/s of charrnn.training.loop.train over `steps` steps (a multiple of `window`, its log
    interval) after a warm-up of one window, and the mean loss of its last window."""
    from charrnn.config import config_from_dict
    from charrnn.training.loop import train

    cfg = config_from_dict({
        "data": {"path": str(ctx.train_text), "val_fraction": 0.0},
        "model": {"type": cell, "embedding_dim": EMBED, "hidden_size": hidden,
                  "num_layers": LAYERS, "dropout": 0.0},
        "train": {"batch_size": BATCH, "seq_len": SEQ, "max_steps": window + steps, "lr": LR,
                  "lr_schedule": "constant", "weight_decay": 0.0, "grad_clip": GRAD_CLIP,
                  "eval_every": 10 ** 9, "save_every": None, "log_every": window,
                  "device": ctx.args.device, "threads": ctx.threads, "seed": 1337,
                  "out_dir": str(out_dir)},
    }, source="bench")
    windows = []  # (step, chars_per_sec, train_loss) of every "step" event

    def on_event(kind: str, info: dict) -> None:
        if kind == "step":
            windows.append((info["step"], info["chars_per_sec"], info["train_loss"]))

    train(cfg, run_dir=str(out_dir), on_event=on_event)
    shutil.rmtree(out_dir, ignore_errors=True)
    chars = seconds = 0.0
    prev = 0
    for step, rate, _ in windows:
        n = (step - prev) * BATCH * SEQ
        prev = step
        if step > window:
            chars += n
            seconds += n / rate
    if not seconds:
        raise RuntimeError(f"charrnn train emitted no step events after step {window}")
    return chars / seconds, windows[-1][2]


def _bare_train_once(ctx: Context, ids, vocab_size: int, cell: str, hidden: int, warmup: int,
                     steps: int, window: int = 1) -> tuple[float, float]:
    """chars/s of the bare loop over `steps` timed steps after `warmup` untimed ones, and the
    mean loss of the last `window` steps (charrnn's must match it: same seed, weights, data,
    learning rate and steps). The losses are kept on the device and read after the timing."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(1337)
    model = ctx.BareLM(cell, vocab_size, EMBED, hidden, LAYERS).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    per = (len(ids) - 1) // BATCH
    windows = per // SEQ
    xs = ids[: BATCH * per].view(BATCH, per)
    ys = ids[1: BATCH * per + 1].view(BATCH, per)
    h, t0, last = None, None, []
    for i in range(warmup + steps):
        if i == warmup:
            ctx.sync()
            t0 = time.perf_counter()
        w = i % windows
        if w == 0:
            h = None  # a new pass over the text starts from an empty state (as charrnn does)
        x, y = xs[:, w * SEQ:(w + 1) * SEQ], ys[:, w * SEQ:(w + 1) * SEQ]
        with ctx.autocast():
            logits, h = model(x, h)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        h = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
        if i >= warmup + steps - window:
            last.append(loss.detach())
    ctx.sync()
    rate = steps * BATCH * SEQ / (time.perf_counter() - t0)
    return rate, torch.stack(last).double().mean().item()


def _calibrate(ctx: Context, ids, vocab_size: int, cell: str, hidden: int) -> int:
    """Timed steps per measurement: enough for about `timed_s` seconds (the bare loop's pace)."""
    rate, _ = _bare_train_once(ctx, ids, vocab_size, cell, hidden, ctx.s["warmup"], 2)
    steps = math.ceil(ctx.s["timed_s"] * rate / (BATCH * SEQ))
    return min(2000, max(ctx.s["min_steps"], steps))


@bench("train")
def train_vs_bare_loop(ctx: Context) -> list[dict]:
    """`train <model> h<H>`: chars/s, alternating charrnn and the bare loop, medians."""
    import torch
    from charrnn.text.data import load_corpus

    corpus = load_corpus(str(ctx.train_text), 0.0, use_cache=False)
    ids = corpus.ids.long().to(ctx.device)  # a bare loop keeps the whole text on the device
    rows = []
    warmup, repeats = ctx.s["warmup"], ctx.s["repeats"]
    for hidden in ctx.s["hidden"]:
        for cell in ctx.s["models"]:
            steps = ctx.args.steps or _calibrate(ctx, ids, len(corpus.vocab), cell, hidden)
            # charrnn logs every `window` steps: one window of warm-up, then whole windows
            window = max(warmup, -(-steps // 4))
            steps = -(-steps // window) * window
            a, b = [], []
            for r in range(repeats):
                rate, loss_a = _charrnn_train_once(ctx, cell, hidden, window, steps,
                                                   ctx.tmp / f"run-{cell}-{hidden}-{r}")
                a.append(rate)
                rate, loss_b = _bare_train_once(ctx, ids, len(corpus.vocab), cell, hidden,
                                                window, steps, window)
                b.append(rate)
                log(f"train {cell} h{hidden} repeat {r + 1}/{repeats} ({steps} steps): "
                    f"charrnn {a[-1]:,.0f} bare {b[-1]:,.0f} chars/s")
            ca, cb = median(a), median(b)
            rows.append(row("train", f"train {cell} h{hidden}", ca, "chars/s", reference=cb,
                            reference_name="bare PyTorch loop", ratio=ca / cb,
                            target=(">=", 0.97), samples={"charrnn": a, "reference": b},
                            model=cell, hidden=hidden, steps=steps, warmup=window,
                            batch=BATCH, seq_len=SEQ, mkldnn=torch.backends.mkldnn.enabled,
                            final_loss={"charrnn": loss_a, "reference": loss_b}))
            if not math.isclose(loss_a, loss_b, rel_tol=0.02):
                log(f"train {cell} h{hidden}: the last windows' losses differ (charrnn {loss_a:.4f}, "
                    f"bare {loss_b:.4f}): the two loops no longer compute the same thing")
    return rows
