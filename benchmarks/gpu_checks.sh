#!/usr/bin/env bash
# The CUDA checks and GPU figures, on a machine with a CUDA GPU, in one call of at most
# BUDGET_S (450) seconds, about 7 minutes of parts (an estimate from their times on 2026-11-30).
# The parts run most important first: the cuda-marked tests; a GPU checkpoint sampled and
# resumed on the CPU; the hot path: training h128 LSTM, GRU and RNN against the bare loop
# (target 0.97 x each: the part fails below it), and a 2-layer run resumed on the GPU with
# dropout and without, each said to have continued exactly or not (README "Checkpoints and
# resuming": not expected with dropout); the precision comparison (fp32/TF32, fp16, bf16: speed
# and validation loss after MINUTES (0.25) each, PRECISION_REPEATS (1) rounds, each in the
# reverse order of the one before); the quick sampling and eval rows; the recurrent state's
# dtype under each precision; the time of bf16's weight copies against a bf16 training step.
# Once the budget is spent, the command running is stopped and the parts left are skipped;
# the last line names them (ONLY runs them in a call of their own).
# Two parts measured before run only when named (about 5 minutes together): world size 1 under
# torchrun (NCCL) against the plain command (the bench's scaling row), and the planned run on
# Tiny Shakespeare next to configs/shakespeare.yaml for PLAN_MINUTES (2) each:
#   benchmarks/gpu_checks.sh                          (log: $OUT/gpu-checks.log if OUT is set,
#                                                      else benchmarks/results/gpu-checks.log)
#   ONLY='scaling|planned' benchmarks/gpu_checks.sh   ONLY and SKIP match part names, as regexes;
#   SKIP='' BUDGET_S=900 benchmarks/gpu_checks.sh     SKIP='' runs every part (about 12 minutes);
#                                                     a SKIP replaces the default one, so
#                                                     SKIP=precision runs every part but that
#   DRY_RUN=1 benchmarks/gpu_checks.sh                prints the commands, and runs none
# Each part runs even if an earlier one fails, under its own time limit; the last line names
# the parts that failed (the exit status is then 1) and those the budget left out.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${OUT:-benchmarks/results}
minutes=${MINUTES:-0.25}         # per precision and round in the comparison
repeats=${PRECISION_REPEATS:-1}  # rounds of the precision comparison
skip=${SKIP-scaling|planned}     # the parts left out unless named (SKIP='' runs them all)
[ -n "${ONLY:-}" ] && skip=${SKIP:-}
plan_minutes=${PLAN_MINUTES:-2}  # the planned run and configs/shakespeare.yaml, each
budget=${BUDGET_S:-450}          # the call's seconds: parts not reached by then are skipped
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python  # make install's
work=$(mktemp -d /tmp/charrnn-gpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -n "${DRY_RUN:-}" ] && results=$work  # a dry run leaves nothing behind in the repository
mkdir -p "$results"
log="$results/gpu-checks.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CHARRNN_CACHE_DIR=${CHARRNN_CACHE_DIR:-$work/cache}

part=""
failed=()
late=()     # the parts the call's time did not reach, or cut short
skipping=""
part() {  # part NAME [WHAT]: the part the next commands belong to, and its heading
  part=$1
  skipping=""
  if { [ -n "${ONLY:-}" ] && ! grep -qE "$ONLY" <<<"$1"; } ||
     { [ -n "$skip" ] && grep -qE "$skip" <<<"$1"; }; then
    skipping=1
    echo "== $1: skipped (not named in ONLY, or named in SKIP)"
    return
  fi
  if [ "$SECONDS" -ge "$budget" ]; then
    skipping=1
    late+=("$1")
    echo "== $1: skipped (out of time: the call's $budget s are spent; ONLY='$1' runs it)"
    return
  fi
  echo "== $1${2:+: $2}"
}

fail() {  # the current part failed (named once in the summary)
  [ ${#failed[@]} -gt 0 ] && [ "${failed[-1]}" = "$part" ] || failed+=("$part")
}

run() {  # run LIMIT_SECONDS COMMAND...: print it, then run it under a time limit (at most
  [ -n "$skipping" ] && return 0  # what is left of the call's budget)
  local limit=$1 left=$(( budget - SECONDS )); shift
  echo "\$ $*"
  if [ -n "${DRY_RUN:-}" ]; then return 0; fi
  if [ "$left" -le 0 ]; then
    echo "(not run: the call's $budget s are spent)"
    out_of_time
    return 0
  fi
  timeout "$(( limit < left ? limit : left ))" "$@"
  local code=$?
  if [ $code -eq 124 ] && [ "$left" -lt "$limit" ]; then
    echo "(stopped: the call's $budget s are spent)"
    out_of_time
  elif [ $code -ne 0 ]; then
    echo "(exit code $code)"
    fail
  fi
}

out_of_time() {  # the current part was cut short by the call's budget (named once)
  [ ${#late[@]} -gt 0 ] && [ "${late[-1]}" = "$part" ] || late+=("$part")
}

summary() {  # the last line: every part passed, or the ones that failed (status 1), and
  local names="" status=0  # the ones the call's time did not reach
  if [ ${#late[@]} -gt 0 ]; then
    names=$(printf '; %s' "${late[@]}")
    names="; out of time: ${names#; }"
  fi
  if [ ${#failed[@]} -eq 0 ]; then
    echo "== done in $SECONDS s: every part ${names:+that ran }passed$names"
    return 0
  fi
  local bad
  bad=$(printf '; %s' "${failed[@]}")
  echo "== done in $SECONDS s: ${#failed[@]} part(s) FAILED: ${bad#; }$names"
  return 1
}

precision_table() {  # precision_table RUN...: one row per run (RUN ends in -ROUND-PRECISION),
  [ -n "${DRY_RUN:-}${skipping}" ] && return 0  # then each precision's median over the rounds
  $py - "$@" <<'EOF' || fail
import json, os, statistics, subprocess, sys
bad, runs = False, {}
label = os.environ.get("TABLE_LABEL", "precision")
print(f"| {label} | round | chars/s (median of logged windows) | steps | val loss (nats/char) |")
print("|---|---|---|---|---|")
for run in sys.argv[1:]:
    rnd, precision = run.rsplit("-", 2)[1:]
    try:
        rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    except OSError:
        print(f"| {precision} | {rnd} | run failed | | |")
        bad = True
        continue
    rates = [r["chars_per_sec"] for r in rows if "chars_per_sec" in r][1:]  # first: warm-up
    steps = max((r["step"] for r in rows), default=0)
    ev = subprocess.run([sys.executable, "-m", "charrnn", "eval", "-c", run, "--json", "-q"],
                        capture_output=True, text=True)
    loss = json.loads(ev.stdout)["loss"] if ev.returncode == 0 else float("nan")
    rate = statistics.median(rates) if rates else float("nan")
    bad = bad or ev.returncode != 0 or not rates
    runs.setdefault(precision, []).append((rate, steps, loss))
    print(f"| {precision} | {rnd} | {rate:,.0f} | {steps} | {loss:.4f} |")
for precision, got in runs.items():
    rate, steps, loss = (statistics.median(x) for x in zip(*got))
    print(f"| {precision} | median of {len(got)} | {rate:,.0f} | {steps:g} | {loss:.4f} |")
sys.exit(1 if bad else 0)
EOF
}

{
part "machine"
run 20 nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
run 60 $py -c 'import torch, typer; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "cudnn", torch.backends.cudnn.version(), "typer", typer.__version__, torch.cuda.get_device_name(),
  "bf16", torch.cuda.is_bf16_supported(including_emulation=False))'

part "cuda-marked tests"
workers=$($py -c 'import xdist' 2>/dev/null && echo "-n 4")  # pytest-xdist, where installed
run 240 $py -m pytest -q -p no:cacheprovider $workers -m cuda tests

part "GPU checkpoint on the CPU" "bf16 where supported, else fp16; sampled and resumed on the CPU"
half=$($py -c 'import torch; print("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16")' 2>/dev/null || echo fp16)
run 90 $py -m charrnn train configs/tiny.yaml --device cuda --set train.precision=${half:-fp16} \
  --out "$work/gpu-tiny" -q
run 30 $py -m charrnn sample -c "$work/gpu-tiny" --device cpu --greedy --prime sharks --length 60
run 90 $py -m charrnn train --resume "$work/gpu-tiny" --device cpu --set train.precision=fp32 \
  --max-steps 350
run 30 $py -m charrnn info "$work/gpu-tiny"

part "hot path: training against the bare loop" "h128 LSTM, GRU and RNN, 3 repeats of 3 s; --strict: below 0.97 x fails"
run 240 $py benchmarks/bench.py --only train --hidden 128 --repeats 3 --device cuda --strict \
  --out "$results/gpu-train-h128.json"

part "hot path: dropout resume" "2-layer LSTM, 40 steps in one go and 20 + a resume for 20, with dropout 0.2 and without; the four first runs side by side, then the two resumes"
run 240 $py - "$work" <<'EOF'
import json, subprocess, sys, torch
work = sys.argv[1]
def train(dropout, *args):
    cmd = [sys.executable, "-m", "charrnn", "train", *args]
    if args[0] != "--resume":
        cmd += ["--device", "cuda", "-q"]
        for key in ("model.num_layers=2", f"model.dropout={dropout}", "train.log_every=1",
                    "train.lr_schedule=constant", "train.eval_every=1000"):
            cmd += ["--set", key]
    print("$", " ".join(cmd[1:]), flush=True)
    return subprocess.Popen(cmd)
def together(*procs):
    return all([p.wait() == 0 for p in procs])
dropouts = ("0.2", "0.0")
ok = together(*(train(d, "configs/tiny.yaml", "--max-steps", n, "--out", f"{work}/drop-{d}-{part}")
                for d in dropouts for n, part in (("40", "whole"), ("20", "resumed"))))
ok = together(*(train(d, "--resume", f"{work}/drop-{d}-resumed", "--max-steps", "40")
                for d in dropouts)) and ok
for d in dropouts:
    runs = [f"{work}/drop-{d}-{part}" for part in ("whole", "resumed")]
    try:
        weights = [torch.load(f"{r}/last.pt", map_location="cpu", weights_only=True)["model"]
                   for r in runs]
        losses = [[r["train_loss"] for r in map(json.loads, open(f"{run}/metrics.jsonl"))
                   if "train_loss" in r and r["step"] > 20] for run in runs]
    except OSError as err:
        print(f"dropout {d}: a run left no checkpoint or metrics ({err})")
        ok = False
        continue
    diff = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    same = losses[0] == losses[1] and len(losses[0]) == 20
    print(f"dropout {d}: the resumed run continued exactly: {'yes' if diff == 0 and same else 'no'} "
          f"(largest weight difference at step 40: {diff:.3g}; the 20 losses after the resume "
          f"{'are' if same else 'are not'} the same)")
sys.exit(0 if ok else 1)
EOF

part "precision comparison" "configs/shakespeare.yaml for $minutes minutes each, $repeats round(s), each in the reverse order of the one before; validation loss by eval"
order=(fp32 fp16 bf16)
runs=()
for (( round = 1; round <= repeats; round++ )); do
  for precision in "${order[@]}"; do
    run $(( ${minutes%.*} * 60 + 150 )) $py -m charrnn train configs/shakespeare.yaml \
      --device cuda --out "$work/prec-$round-$precision" --max-minutes "$minutes" \
      --set train.precision=$precision --set train.log_every=25 -q
    runs+=("$work/prec-$round-$precision")
  done
  order=("${order[2]}" "${order[1]}" "${order[0]}")
done
precision_table "${runs[@]}"

part "benchmark rows on the GPU" "quick: sampling, eval (training: the hot-path part)"
run 120 $py benchmarks/bench.py --quick --only sample,eval --device cuda \
  --out "$results/gpu-quick.json"

part "hidden-state dtype" "the recurrent state's dtype under each precision (autocast alone would give fp16)"
run 60 $py - <<'EOF'
import torch
from charrnn.device import autocast
from charrnn.models.recurrent import CharRNN
dev = torch.device("cuda")
model = CharRNN("lstm", 65, 32, 64, 2, 0.0).to(dev)
x = torch.randint(0, 65, (4, 16), device=dev)
for precision in ("fp32", "fp16", "bf16"):
    with autocast(dev, precision):
        logits, (h, c) = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            plain = model.rnn(model.embed(x))[1][0].dtype
    print(f"{precision}: hidden {h.dtype}, logits {logits.dtype}  "
          f"(nn.LSTM under bare bf16 autocast: {plain})")
EOF

part "bf16 weight copies" "their time against a bf16 training step of configs/shakespeare.yaml's 3 x 512 LSTM"
run 90 $py - <<'EOF'
import time, torch
import torch.nn.functional as F
from charrnn.config import load_config
from charrnn.device import autocast
from charrnn.models import build_model
dev, t = torch.device("cuda"), load_config("configs/shakespeare.yaml").train
model = build_model(load_config("configs/shakespeare.yaml").model, 65).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
x, y = (torch.randint(0, 65, (t.batch_size, t.seq_len), device=dev) for _ in range(2))
def timed(work, repeats):
    for _ in range(3):
        work()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats
def step():
    with autocast(dev, "bf16"):
        logits, _ = model(x)
    F.cross_entropy(logits.float().reshape(-1, 65), y.reshape(-1)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
weights = [p for p in model.parameters() if p.dim() > 1]  # every weight matrix: an upper bound
copies = timed(lambda: [p.to(torch.bfloat16) for p in weights], 200)
whole = timed(step, 20)
print(f"bf16 copies of {sum(p.numel() for p in weights):,} weights: {copies * 1e6:.1f} µs; "
      f"a bf16 training step ({t.batch_size} x {t.seq_len}): {whole * 1e3:.2f} ms; "
      f"the copies are {copies / whole:.2%} of a step")
EOF

part "scaling row" "world size 1 under torchrun (NCCL, DDP) next to the plain command"
run 200 $py benchmarks/bench.py --only scaling --device cuda --out "$results/gpu-scaling.json"

part "planned run" "charrnn train --data tinyshakespeare.txt (planned) next to configs/shakespeare.yaml, $plan_minutes minutes each; validation loss by eval"
run 60 $py -m charrnn plan --data data/tinyshakespeare.txt --max-minutes "$plan_minutes" \
  --device cuda
run $(( ${plan_minutes%.*} * 60 + 150 )) $py -m charrnn train --data data/tinyshakespeare.txt \
  --device cuda --max-minutes "$plan_minutes" --out "$work/plan-1-planned" -q
run $(( ${plan_minutes%.*} * 60 + 150 )) $py -m charrnn train configs/shakespeare.yaml \
  --device cuda --max-minutes "$plan_minutes" --out "$work/plan-1-shakespeare.yaml" \
  --set train.log_every=25 -q
TABLE_LABEL=run precision_table "$work/plan-1-planned" "$work/plan-1-shakespeare.yaml"

summary
} 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ -n "${DRY_RUN:-}" ] || echo "log: $log"
exit "$status"
