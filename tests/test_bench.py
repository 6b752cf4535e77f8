"""The benchmark harness: its rows register by group, and `benchmarks/bench.py --quick` runs
and reports (the figures themselves are not asserted: they depend on the machine and its load).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = ["train lstm h128", "train gru h128", "train rnn h128", "sample b1 vs bare",
        "sample b32 vs bare", "sample b32 / b1", "sample b1 lean step (cpu)", "sample b1 vs lean bare step",
        "export int8 / fp32 size", "sample b1 int8 vs fp32 (cpu)", "eval", "load first", "load cached",
        "load cached: train to first step",
        "load peak memory", "load held memory", "load peak memory (UTF-8",
        "startup charrnn --help",
        "startup charrnn sample", "memory train h512"]


def test_every_group_has_rows_registered_in_its_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import importlib
        import harness
        for name in harness.MODULES:
            importlib.import_module(f"harness.{name}")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert set(harness.REGISTRY) == set(harness.GROUPS)
    for group, functions in harness.REGISTRY.items():
        assert functions, group
        assert all(fn.__doc__ for fn in functions), group  # each says what its rows measure
    with pytest.raises(ValueError, match="unknown benchmark group"):
        harness.bench("nonsense")


def test_benchmark_docs_refer_only_to_files_in_the_repository():
    for path in (ROOT / "benchmarks").rglob("*"):
        if path.suffix in (".md", ".py", ".sh"):
            text = path.read_text(encoding="utf-8")
            assert "../" not in text and "/work/" not in text, path


@pytest.mark.slow
def test_bench_quick(tmp_path):
    out = tmp_path / "x.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = res.stdout
    assert "| benchmark | charrnn | reference | ratio | target | met | spread |" in table
    for name in ROWS:
        assert f"| {name}" in table, f"row {name!r} missing from:\n{table}"

    report = json.loads(out.read_text(encoding="utf-8"))
    for key in ("schema", "machine", "date", "mode", "torch", "device", "threads", "cores", "loadavg_start",
                "duration_s", "settings", "rows"):
        assert key in report, key
    assert report["mode"] == "quick"
    assert report["threads"] >= 1
    groups = {r["group"] for r in report["rows"]}
    assert groups == {"train", "sample", "eval", "load", "startup", "memory"}
    for r in report["rows"]:
        for key in ("group", "name", "value", "unit", "reference", "ratio", "target", "met"):
            assert key in r, (r.get("name"), key)
        assert r["name"] in table


def _gpu_checks(tmp_path, fail: str = "", slow: str = "",
                **env_vars: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu_checks.sh with stand-ins for nvidia-smi and Python (no GPU needed): the
    stand-in Python fails when its arguments match the extended regex `fail`, else succeeds;
    it takes 2 s when they match `slow`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tools = {"nvidia-smi": "echo 'Stand-in GPU, 1 MiB'\n",
             "python": 'if [ -n "$FAKE_SLOW" ] && echo "$*" | grep -Eq -- "$FAKE_SLOW"; then\n'
                       '  sleep 2\nfi\n'
                       'if [ -n "$FAKE_FAIL" ] && echo "$*" | grep -Eq -- "$FAKE_FAIL"; then\n'
                       '  echo "stand-in failure: $*" >&2; exit 3\nfi\n'}
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": str(bin_dir / "python"), "OUT": str(tmp_path / "out"), "FAKE_FAIL": fail,
           "FAKE_SLOW": slow,
           **env_vars}
    env.pop("DRY_RUN", None)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_gpu_checks_exit_nonzero_and_name_the_failed_parts(tmp_path):
    ok = _gpu_checks(tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "failed" not in ok.stdout.lower()

    res = _gpu_checks(tmp_path, fail="-m pytest|--only sample,eval")
    assert res.returncode != 0, res.stdout[-2000:]
    assert "== benchmark rows on the GPU" in res.stdout  # every part ran after the failures
    summary = [line for line in res.stdout.splitlines() if line.startswith("== done")]
    assert len(summary) == 1 and "FAILED" in summary[0], res.stdout[-2000:]
    assert "cuda-marked tests" in summary[0] and "benchmark rows" in summary[0], summary
    assert "precision" not in summary[0] and "machine" not in summary[0], summary  # only those
    log = (tmp_path / "out" / "gpu-checks.log").read_text()
    assert log.strip().splitlines()[-1] == summary[0]


def test_gpu_checks_run_in_one_call_and_name_the_parts_measured_before(tmp_path):
    """By default the parts measured before are left out (one call of under 8 minutes); ONLY
    runs them alone, and SKIP='' runs every part."""
    default = _gpu_checks(tmp_path)
    for left_out in ("scaling row", "planned run"):
        assert f"== {left_out}: skipped" in default.stdout, default.stdout[-2000:]
    assert "-m pytest" in default.stdout and "--only scaling" not in default.stdout
    assert "== hot path: dropout resume: 2-layer" in default.stdout
    named = _gpu_checks(tmp_path, fail="-m pytest", ONLY="scaling|planned")
    assert named.returncode == 0, named.stdout[-2000:]  # the failing part was not run
    assert "== planned run: charrnn train" in named.stdout and "--only scaling" in named.stdout
    assert "== cuda-marked tests: skipped" in named.stdout and "-m pytest" not in named.stdout
    assert "--data data/tinyshakespeare.txt --device cuda --max-minutes 2" in named.stdout
    every = _gpu_checks(tmp_path, SKIP="")
    assert "skipped" not in every.stdout and "--only scaling" in every.stdout, every.stdout[-2000:]


def test_gpu_checks_skip_the_parts_the_calls_time_does_not_reach(tmp_path):
    """The parts run most important first; a command running when BUDGET_S is spent is
    stopped, the parts after it are skipped, and the last line names them all."""
    res = _gpu_checks(tmp_path, slow="-m pytest", BUDGET_S="1")
    assert res.returncode == 0, res.stdout[-2000:]  # out of time is not a failure
    order = [line.split(":")[0] for line in res.stdout.splitlines() if line.startswith("== ")]
    assert order[:3] == ["== machine", "== cuda-marked tests", "== GPU checkpoint on the CPU"]
    assert "(stopped: the call's 1 s are spent)" in res.stdout
    assert "== GPU checkpoint on the CPU: skipped (out of time" in res.stdout
    assert "== hot path: dropout resume: skipped (out of time" in res.stdout
    assert "charrnn train" not in res.stdout  # nothing after the slow part was started
    last = next(line for line in res.stdout.splitlines() if line.startswith("== done"))
    assert "every part that ran passed; out of time: cuda-marked tests; GPU checkpoint" in last
    assert "scaling row" not in last  # left out by default, not by the clock


def _paragraph(text: str, start: str) -> str:
    """The paragraph of `text` that holds `start` (up to the next blank line)."""
    at = text.index(start)
    begin = text.rfind("\n\n", 0, at) + 2
    end = text.find("\n\n", at)
    return text[begin:end if end >= 0 else len(text)]


def test_readme_scaling_figures_are_those_of_the_results_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = _paragraph(readme, '`make bench BENCH_ARGS="--only scaling"`')
    for name in ("cpu2-2026-11-30.json", "nvidia-h200-2026-11-30-scaling.json"):
        report = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
        (r,) = [r for r in report["rows"] if r["group"] == "scaling"]
        for figure in (f"{r['value']:,.0f}", f"{r['reference']:,.0f}", f"{r['ratio']:.2f} x",
                       f"spread {r['spread']:.0%}"):
            assert figure in paragraph, (name, figure, paragraph)


def test_readme_precision_table_says_how_many_runs_it_is():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = _paragraph(readme, "| precision | chars/s")
    paragraph = _paragraph(readme, readme[readme.index(table) + len(table):].lstrip()[:40])
    log = (ROOT / "benchmarks" / "results" / "nvidia-h200-2026-11-30-gpu-checks.log").read_text()
    fp32_rows = [line for line in log.splitlines() if line.startswith("| fp32 |")]
    assert len(fp32_rows) == 1  # one run of each precision, fp32 first
    assert "one run" in paragraph and "fp32 first" in paragraph, paragraph
    for line in table.splitlines()[2:]:  # each row's figures are the log's
        figures = [cell.strip() for cell in line.strip("|").split("|")][1:]
        assert any(all(f.replace(",", "") in row.replace(",", "") for f in figures)
                   for row in log.splitlines()), line


def test_docs_make_no_stale_claims():
    import re

    from charrnn import checkpoint, device
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bench_doc = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    # the number of cuda tests changes as tests are added: the text gives none
    assert not re.search(r"\b\d+ `?cuda`?(-marked)? tests", readme)
    # a claim about older checkpoint formats needs an older format
    if checkpoint.FORMAT_VERSION == 1:
        assert "older versions keep loading" not in readme
    # the demo's time says under what load it holds
    demo = _paragraph(readme, "`make demo` trains in")
    assert "idle" in demo and "loaded" in demo and "--threads 1" in demo, demo
    # the GPU precision the bench doc names is the one `auto` resolves to there
    used = re.search(r"On a GPU both sides use charrnn's default precision \(([^)]*)\)",
                     bench_doc.replace("\n", " "))
    assert used and device.AUTO_PRECISION_CUDA in used.group(1) and "bf16" not in used.group(1)


def test_seconds_to_first_step_times_a_command_until_its_first_logged_step(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness.load import seconds_to_first_step
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    metrics = tmp_path / "metrics.jsonl"
    writer = ("import pathlib, sys, time; time.sleep(0.3); "
              "pathlib.Path(sys.argv[1]).write_text('{\"step\": 1}\\n'); time.sleep(60)")
    t0 = time.perf_counter()
    seconds = seconds_to_first_step([sys.executable, "-c", writer, str(metrics)], metrics,
                                    dict(os.environ))
    assert 0.3 <= seconds < 10 and time.perf_counter() - t0 < 20  # the command was then killed
    with pytest.raises(RuntimeError, match=r"no step logged \(exit code 3\)"):
        seconds_to_first_step([sys.executable, "-c", "raise SystemExit(3)"],
                              tmp_path / "none.jsonl", dict(os.environ))
    with pytest.raises(RuntimeError, match="'[(]cached[)]' not in its log"):  # a cache miss
        seconds_to_first_step([sys.executable, "-c", writer.replace("60", "0"), str(metrics)],
                              metrics, dict(os.environ), expect="(cached)")


def test_lean_bare_sampling_step_computes_what_the_module_computes():
    import torch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from harness.common import bare_model_class
        from harness.sample import LeanBareStep
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    torch.manual_seed(0)
    bare = bare_model_class()("lstm", 11, 8, 16, 2).eval()
    ids = torch.randint(0, 11, (1, 12))
    with torch.inference_mode():
        want, _ = bare(ids)
        logits, hidden = bare(ids[:, :4])
        step = LeanBareStep(bare, hidden, temperature=0.5)
        for t in range(4, 12):
            got = step.step(ids[0, t:t + 1])
            assert torch.allclose(got, want[:, t] / 0.5, atol=1e-5), t


def _harness_module(name: str):
    import importlib
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_compress_group_runs_in_quick_mode_only_when_named():
    cli = _harness_module("harness.cli")
    assert "compress" in cli.parse_args([]).only  # `make bench` measures it
    assert "compress" not in cli.parse_args(["--quick"]).only  # `make bench-quick` stays short
    assert cli.parse_args(["--quick", "--only", "compress"]).only == ["compress"]
    args = cli.parse_args(["--compress-model", "runs/x", "--set", "compress_chars=5000",
                           "--set", "compress_adapt=true"])
    assert args.compress_model == "runs/x"
    assert args.settings == {"compress_chars": 5000, "compress_adapt": True}
    with pytest.raises(SystemExit):
        cli.parse_args(["--set", "no_such_setting=1"])


def test_compress_mixed_text_holds_what_a_shakespeare_model_lacks():
    compress = _harness_module("harness.compress")
    source = compress.SHAKESPEARE.read_text(encoding="utf-8")[:5000]
    data = compress.mixed_text(source, 60_000)
    assert 60_000 - 4 <= len(data) <= 60_000 and data == compress.mixed_text(source, 60_000)
    text = data.decode("utf-8")  # whole characters only
    assert text.startswith("\ufeff") and "\r\n" in text and "\n" in text.replace("\r\n", "")
    assert {c for c in text if ord(c) > 0xFFFF} and {c for c in text if 0x4E00 <= ord(c) <= 0x9FFF}


def test_compress_round_trip_in_process_is_exact_on_mixed_text():
    import torch
    from charrnn.config import ModelConfig
    from charrnn.models import build_model
    from charrnn.text.vocab import Vocab
    compress = _harness_module("harness.compress")
    source = compress.SHAKESPEARE.read_text(encoding="utf-8")[:20_000]
    vocab = Vocab.from_text(source)
    torch.manual_seed(0)
    model = build_model(ModelConfig(type="lstm", embedding_dim=8, hidden_size=16, num_layers=1,
                                    dropout=0.0), len(vocab)).eval()
    data = compress.mixed_text(source, 30_000)
    trip = compress.round_trip(model, vocab, data, streams=64)
    assert trip["exact"] is True and trip["bytes"] > 0
    assert trip["seconds"] > 0 and trip["decompress_seconds"] > 0


def test_compress_size_targets_follow_the_model_measured():
    compress = _harness_module("harness.compress")
    m = {"chars": 1000, "static": {"bytes": 300, "seconds": 2.0, "decompress_seconds": 2.5,
                                   "exact": True},
         "baselines": {"xz -9e": 400, "bzip2 -9": 380}, "predicted": 290,
         "compress_seconds": [2.0], "eval_seconds": [1.0]}

    def targets(kind):
        rows = compress.static_rows(m, kind, "some model")
        return {r["name"]: r["target"] and r["target"]["value"] for r in rows}, rows

    given, rows = targets("given")
    assert given["compress vs xz -9e"] == 0.75 and given["compress vs bzip2 -9"] == 0.85
    bench_model, _ = targets("bench")
    assert bench_model["compress vs xz -9e"] == 0.85 and bench_model["compress vs bzip2 -9"] is None
    small, _ = targets("small")  # a model of a few dozen steps: sizes reported, no target
    assert small["compress vs xz -9e"] is None and small["compress vs bzip2 -9"] is None
    by_name = {r["name"]: r for r in rows}
    assert by_name["compress vs xz -9e"]["ratio"] == 0.75
    assert by_name["compress vs eval's loss"]["ratio"] == 300 / (290 + 512)
    assert by_name["compress round trip"]["met"] is True
    assert by_name["compress speed vs eval"]["ratio"] == 0.5
    assert all(r["model"] == "some model" for r in rows)
    m["static"]["exact"] = False
    assert {r["name"]: r["met"] for r in compress.static_rows(m, "given", "x")}[
        "compress round trip"] is False


@pytest.mark.slow
def test_bench_quick_compress_group(tmp_path):
    out = tmp_path / "c.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick",
                          "--only", "compress", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    for name in ("compress vs xz -9e", "compress vs bzip2 -9", "compress vs eval's loss",
                 "compress round trip", "compress speed vs eval", "compress round trip 0.2 MB",
                 "compress --scratch vs gzip -9", "compress --scratch round trip"):
        assert rows[name]["group"] == "compress" and f"| {name}" in res.stdout, name
    assert rows["compress round trip"]["met"] and rows["compress round trip 0.2 MB"]["met"]
    assert rows["compress vs eval's loss"]["met"] and rows["compress --scratch round trip"]["met"]
    assert not [name for name in rows if "--adapt" in name]  # full mode only


@pytest.mark.slow
def test_bench_compress_full_mode_runs_at_reduced_sizes(tmp_path):
    """Full mode's own paths (the bench trains the model for minutes, --adapt, the 10 MB round
    trip), at sizes that take a minute."""
    out = tmp_path / "c.json"
    sets = ["compress_minutes=0.05", "compress_chars=3000", "compress_repeats=2",
            "compress_roundtrip_bytes=100000", "scratch_chars=3000"]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--only",
                          "compress", "--out", str(out), "--threads", "1",
                          *[a for s in sets for a in ("--set", s)]], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["compress vs xz -9e"]["target"]["value"] == 0.85
    assert rows["compress vs xz -9e"]["model"] == "trained 0.05 min by the bench"
    assert rows["compress --adapt round trip"]["met"] and rows["compress round trip"]["met"]
    assert rows["compress --adapt vs static"]["target"]["value"] == 0.98
    assert rows["compress round trip 0.1 MB"]["met"]
    assert rows["compress --scratch round trip"]["met"]
    assert rows["compress --scratch vs gzip -9"]["target"] is None  # not the whole file
    assert len(rows["compress speed vs eval"]["samples"]["charrnn"]) == 2


def test_sizing_summarises_saved_results_as_a_table_and_a_chart(tmp_path):
    """`benchmarks/sizing.py --summarise` trains nothing: it reads result files and gives the
    markdown table (the plan's shape beside its loss) and the chart."""
    pytest.importorskip("matplotlib")
    rows = [{"text": "t", "minutes": 2.0, "run": "planned", "val_loss": 1.5,
             "model": {"num_layers": 1, "hidden_size": 256, "dropout": 0.0}},
            {"text": "t", "minutes": 2.0, "run": "defaults", "val_loss": 1.8,
             "model": {"num_layers": 2, "hidden_size": 256, "dropout": 0.0}},
            {"text": "t", "minutes": 2.0, "run": "1x128 b16 d0.0", "val_loss": 1.6},
            {"text": "t", "minutes": 2.0, "run": "2x512 b16 d0.3", "error": ["failed"]}]
    results = tmp_path / "sizing.json"
    results.write_text(json.dumps({"rows": rows}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sizing.py"), "--summarise",
                           str(results)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| t | 2 | 1.500 | 1x256 d0 | 1.800 | 1.600 | 1x128 b16 d0.0 |" in proc.stdout
    assert (tmp_path / "sizing.png").read_bytes()[:4] == b"\x89PNG"
