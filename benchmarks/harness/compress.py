"""Compression: `charrnn compress` against `xz -9e` and `bzip2 -9`, against what eval's loss
predicts, and against eval's speed, on the held-out tenth of Tiny Shakespeare; exact round
trips, including a large one (10 MB; quick: 0.2 MB) of a text with characters the model lacks.

The model is `--compress-model PATH`, else one the group trains: `charrnn train
configs/shakespeare-cpu.yaml --set train.batch_size=16 --max-minutes 2` (quick: a small model,
a few dozen steps). The compress, decompress and eval figures on the held-out text are whole
processes (start-up included, the same for both sides of the speed row); the large round trip
runs in this process. `benchmarks/compression.py` is the same measurement as a script, with
gzip and zstd too.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from harness import bench
from harness.common import ROOT, Context, log, median, row

SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
VAL_CHARS = 111_539  # the held-out tenth: what `charrnn eval` scores by default
BASELINES = {"gzip -9": ["gzip", "-9", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"],
             "xz -9e": ["xz", "-9e", "-c"], "zstd -19 --ultra -22": ["zstd", "--ultra", "-22",
                                                                     "-c", "-q"]}
CHARRNN = [sys.executable, "-m", "charrnn"]
HEADER_SLACK = 512  # bytes of header and trailer the size target allows beyond eval's figure
# the size targets, by the model measured: the 10-minute model (or any given one), the bench's
# own 2-minute model; a model of a few dozen steps (quick mode) has none
SIZE_TARGETS = {"given": {"xz -9e": 0.75, "bzip2 -9": 0.85}, "bench": {"xz -9e": 0.85},
                "small": {}}
SMALL_MODEL = ["--set", "model.hidden_size=64", "--set", "model.num_layers=1",
               "--set", "model.embedding_dim=32", "--set", "train.warmup_steps=5"]
# characters a model trained on Tiny Shakespeare lacks (emoji, CJK, accents)
FOREIGN = ["🙂", "🎭", "👑", "🗡️", "莎士比亚", "罗密欧与朱丽叶", "王", "é", "—", "“”"]


# ------------------------------------------------------- the measurements (compression.py's too)

def timed(cmd: list[str], data: bytes, env: dict | None = None) -> tuple[bytes, float]:
    """What `cmd` writes given `data` on stdin, and its wall-clock seconds (a whole process)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, input=data, capture_output=True,
                          env=env or {**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                           f"{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc.stdout, seconds


def baselines(data: bytes, names=tuple(BASELINES)) -> dict[str, dict]:
    """Bytes and seconds of each general-purpose coder named that is installed here."""
    results = {}
    for name in names:
        if shutil.which(BASELINES[name][0]):
            packed, seconds = timed(BASELINES[name], data)
            results[name] = {"bytes": len(packed), "seconds": seconds}
    return results


def charrnn_round_trip(checkpoint: str, data: bytes, *flags: str, exe: list[str] = CHARRNN,
                       env: dict | None = None) -> dict:
    """`charrnn compress [flags]` of `data`, then `charrnn decompress` of its output."""
    packed, seconds = timed([*exe, "compress", "-c", checkpoint, "-q", *flags], data, env)
    restored, back_seconds = timed([*exe, "decompress", "-c", checkpoint, "-q"], packed, env)
    return {"bytes": len(packed), "seconds": seconds, "decompress_seconds": back_seconds,
            "exact": restored == data}


def eval_score(checkpoint: str, text: str, exe: list[str] = CHARRNN,
               env: dict | None = None) -> dict:
    """`charrnn eval --json` of `text` on the CPU (where compress codes), and its seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        out, seconds = timed([*exe, "eval", "-c", checkpoint, fh.name, "--json",
                              "--device", "cpu"], b"", env)
    return {**json.loads(out), "seconds": seconds}


def predicted_bytes(score: dict) -> int:
    """The bytes eval's loss says the text needs: loss (nats per character) x characters."""
    return round(score["loss"] * score["chars"] / math.log(2) / 8)


def mixed_text(source: str, size: int, seed: int = 0) -> bytes:
    """At most `size` bytes of UTF-8 (whole characters): a byte-order mark, then `source`
    repeated, line by line, with an emoji, a CJK word or an accent in one line of 50 and CR LF
    ending one line of 10."""
    rng, lines = random.Random(seed), source.split("\n")
    parts, total = ["\ufeff"], 3
    while total < size:
        for line in lines:
            if rng.random() < 0.02:
                at = rng.randint(0, len(line))
                line = line[:at] + rng.choice(FOREIGN) + line[at:]
            piece = line + ("\r\n" if rng.random() < 0.1 else "\n")
            parts.append(piece)
            total += len(piece.encode("utf-8"))
            if total >= size:
                break
    return "".join(parts).encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


def round_trip(model, vocab, data: bytes, streams: int | None = None) -> dict:
    """charrnn.analysis.compress's compress, then decompress, in this process: bytes, seconds
    each way, and whether the text came back byte for byte."""
    from charrnn.analysis.compress import CompressError, compress, decompress
    t0 = time.perf_counter()
    blob = compress(data, model, vocab, streams=streams)
    t1 = time.perf_counter()
    try:
        exact = decompress(blob, model, vocab) == data
    except CompressError as exc:  # the decoder's own check failed: not exact
        log(f"compress: decompress failed: {exc}")
        exact = False
    return {"bytes": len(blob), "seconds": t1 - t0,
            "decompress_seconds": time.perf_counter() - t1, "exact": exact}


# --------------------------------------------------------------------------- the model

def _train(ctx: Context, name: str, threads: int, *flags: str) -> str:
    """A run folder of `charrnn train configs/shakespeare-cpu.yaml` at batch 16, and `flags`."""
    out = ctx.tmp / name
    argv = ctx.charrnn_cmd() + ["train", str(ROOT / "configs" / "shakespeare-cpu.yaml"),
                                "--set", "train.batch_size=16", *flags, "--out", str(out),
                                "--threads", str(threads), "--quiet"]
    _, seconds = timed(argv, b"", ctx.env)
    log(f"compress: trained {name} in {seconds:.0f} s ({' '.join(flags)})")
    return str(out)


def small_model(ctx: Context) -> tuple[str, str]:
    """An LSTM 1x64 trained a few dozen steps (once per run), and what to call it. One
    thread: a second one only slows so small a model down (by 8 times on 2 busy cores)."""
    steps = ctx.s["compress_small_steps"]
    if not hasattr(ctx, "compress_small"):
        ctx.compress_small = _train(ctx, "compress-small", 1, *SMALL_MODEL, "--max-steps",
                                    str(steps))
    return ctx.compress_small, f"lstm 1x64 trained {steps} steps by the bench"


def held_out_model(ctx: Context) -> tuple[str, str, str]:
    """(path, what to call it, its kind in SIZE_TARGETS): --compress-model, else the model the
    bench trains for `compress_minutes`, else (quick) the small model."""
    if ctx.args.compress_model:
        return ctx.args.compress_model, ctx.args.compress_model, "given"
    minutes = ctx.s["compress_minutes"]
    if minutes:
        return (_train(ctx, "compress-model", ctx.threads, "--max-minutes", str(minutes)),
                f"trained {minutes:g} min by the bench", "bench")
    return (*small_model(ctx), "small")


# --------------------------------------------------------------------------- the rows

def _trip_row(name: str, trip: dict, how: str, **extra) -> dict:
    """A round trip's row: exact or not (the target), with its seconds each way."""
    return row("compress", name, int(trip["exact"]), "exact", target=(">=", 1),
               target_on="value", bytes=trip["bytes"], compress_seconds=trip["seconds"],
               decompress_seconds=trip["decompress_seconds"],
               detail=f"compress {trip['seconds']:.1f} s, decompress "
                      f"{trip['decompress_seconds']:.1f} s, {how}", **extra)


def static_rows(m: dict, kind: str, model: str) -> list[dict]:
    """The rows of one static measurement `m`: chars, static (a round trip), baselines (name ->
    bytes), predicted (eval's bytes), compress_seconds and eval_seconds (the repeats)."""
    chars, size = m["chars"], m["static"]["bytes"]
    common = {"model": model, "chars": chars}
    rows = []
    for name, reference in m["baselines"].items():
        bound = SIZE_TARGETS[kind].get(name)
        rows.append(row("compress", f"compress vs {name}", size, "B", reference=reference,
                        reference_name=name, ratio=size / reference,
                        target=bound and ("<=", bound), bits_per_char=8 * size / chars,
                        detail=f"model: {model}" if not rows else None, **common))
    budget = m["predicted"] + HEADER_SLACK
    rows.append(row("compress", "compress vs eval's loss", size, "B", reference=budget,
                    reference_name=f"eval's loss x chars + {HEADER_SLACK} B",
                    ratio=size / budget, target=("<=", 1.01), predicted_bytes=m["predicted"],
                    **common))
    rows.append(_trip_row("compress round trip", m["static"], "whole processes", **common))
    ours = [chars / s for s in m["compress_seconds"]]
    theirs = [chars / s for s in m["eval_seconds"]]
    rows.append(row("compress", "compress speed vs eval", median(ours), "chars/s",
                    reference=median(theirs), reference_name="charrnn eval --device cpu",
                    ratio=median(ours) / median(theirs), target=(">=", 0.33),
                    samples={"charrnn": ours, "reference": theirs},
                    detail="whole processes, start-up included", **common))
    return rows


def adapt_rows(static: dict, adapt: dict, chars: int, model: str) -> list[dict]:
    """`compress --adapt vs static` (bytes) and its round trip."""
    common = {"model": model, "chars": chars}
    return [row("compress", "compress --adapt vs static", adapt["bytes"], "B",
                reference=static["bytes"], reference_name="compress (static)",
                ratio=adapt["bytes"] / static["bytes"], target=("<=", 0.98),
                compress_seconds=adapt["seconds"],
                decompress_seconds=adapt["decompress_seconds"], **common),
            _trip_row("compress --adapt round trip", adapt, "whole processes", **common)]


# --------------------------------------------------------------------------- the group

@bench("compress")
def held_out_tenth(ctx: Context) -> list[dict]:
    """`compress vs xz -9e`, `vs bzip2 -9`, `vs eval's loss`, `round trip`, `speed vs eval`
    and (full mode) `--adapt vs static`: Tiny Shakespeare's held-out tenth (quick: 20,000
    characters of it), whole processes; compress and eval alternately for the speed."""
    path, model, kind = held_out_model(ctx)
    text = SHAKESPEARE.read_text(encoding="utf-8")[-VAL_CHARS:][:ctx.s["compress_chars"]]
    data, exe = text.encode("utf-8"), ctx.charrnn_cmd()
    base = {name: r["bytes"] for name, r in baselines(data, ("xz -9e", "bzip2 -9")).items()}
    static = charrnn_round_trip(path, data, exe=exe, env=ctx.env)
    scores = [eval_score(path, text, exe, ctx.env)]
    seconds = [static["seconds"]]
    for _ in range(1, ctx.s["compress_repeats"]):
        seconds.append(timed([*exe, "compress", "-c", path, "-q"], data, ctx.env)[1])
        scores.append(eval_score(path, text, exe, ctx.env))
    m = {"chars": len(text), "static": static, "baselines": base,
         "predicted": predicted_bytes(scores[0]), "compress_seconds": seconds,
         "eval_seconds": [s["seconds"] for s in scores]}
    log(f"compress: {len(text):,} chars, {static['bytes']:,} B ({base}), eval predicts "
        f"{m['predicted']:,} B; exact {static['exact']}; compress {seconds} s, eval "
        f"{m['eval_seconds']} s")
    rows = static_rows(m, kind, model)
    if ctx.s["compress_adapt"]:
        adapt = charrnn_round_trip(path, data, "--adapt", exe=exe, env=ctx.env)
        log(f"compress --adapt: {adapt['bytes']:,} B, exact {adapt['exact']}, "
            f"{adapt['seconds']:.0f} s + {adapt['decompress_seconds']:.0f} s")
        rows += adapt_rows(static, adapt, len(text), model)
    return rows


@bench("compress")
def scratch_vs_gzip(ctx: Context) -> list[dict]:
    """`compress --scratch vs gzip -9`: the whole Tiny Shakespeare file (quick: its first
    20,000 characters, no target: a model that starts from nothing needs a long text) coded
    with no model (`charrnn compress --scratch`, `charrnn decompress FILE` with no -c), its
    bytes against `gzip -9`'s (target: smaller), and its round trip, whole processes."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:ctx.s["scratch_chars"]]
    data, exe = text.encode("utf-8"), ctx.charrnn_cmd()
    others = baselines(data)  # all four recorded; gzip -9 is the target's
    gzip = others.get("gzip -9")
    packed, seconds = timed([*exe, "compress", "--scratch", "-q"], data, ctx.env)
    restored, back = timed([*exe, "decompress", "-q"], packed, ctx.env)
    trip = {"bytes": len(packed), "seconds": seconds, "decompress_seconds": back,
            "exact": restored == data}
    gzip_note = f"{gzip['bytes']:,} B" if gzip else "not installed"
    log(f"compress --scratch: {len(text):,} chars, {len(packed):,} B (gzip -9: {gzip_note}), "
        f"exact {trip['exact']}, {seconds:.0f} s + {back:.0f} s")
    common = {"model": "none (--scratch)", "chars": len(text)}
    rows = [_trip_row("compress --scratch round trip", trip, "whole processes", **common)]
    if gzip:
        whole = ctx.s["scratch_chars"] is None
        rows.insert(0, row("compress", "compress --scratch vs gzip -9", len(packed), "B",
                           reference=gzip["bytes"], reference_name="gzip -9",
                           ratio=len(packed) / gzip["bytes"],
                           target=("<", 1.0) if whole else None,
                           compress_seconds=seconds, decompress_seconds=back,
                           baselines={name: r["bytes"] for name, r in others.items()},
                           detail=f"{8 * len(packed) / len(text):.3f} bits per character, "
                                  f"{len(text) / seconds:,.0f} chars/s compressing", **common))
    return rows


@bench("compress")
def large_round_trip(ctx: Context) -> list[dict]:
    """`compress round trip <size> MB`: 10 MB (quick: 0.2 MB) of Tiny Shakespeare repeated,
    with emoji, CJK, CR LF and a byte-order mark, coded and restored in this process by the
    small model (LSTM 1x64) in 1,024 streams: exact, seconds and MB/s each way."""
    import charrnn

    size, streams = ctx.s["compress_roundtrip_bytes"], ctx.s["compress_roundtrip_streams"]
    path, model = small_model(ctx)
    data = mixed_text(SHAKESPEARE.read_text(encoding="utf-8"), size)
    loaded = charrnn.load(path, device="cpu")
    trip = round_trip(loaded.model, loaded.vocab, data, streams)
    mb = len(data) / 1e6
    log(f"compress round trip {mb:g} MB: exact {trip['exact']}, {trip['seconds']:.1f} s + "
        f"{trip['decompress_seconds']:.1f} s")
    how = (f"{mb / trip['seconds']:.2f} and {mb / trip['decompress_seconds']:.2f} MB/s, "
           f"{streams} streams, in-process")
    return [_trip_row(f"compress round trip {size / 1e6:g} MB", trip, how, model=model,
                      input_bytes=len(data), streams=streams,
                      compress_mb_s=mb / trip["seconds"],
                      decompress_mb_s=mb / trip["decompress_seconds"],
                      bits_per_char=8 * trip["bytes"] / len(data.decode("utf-8")))]
