"""The benchmark harness: its rows register by group, and `benchmarks/bench.py --quick` runs
and reports (the figures themselves are not asserted: they depend on the machine and its load).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = ["train lstm h128", "train gru h128", "train rnn h128", "sample b1 vs bare",
        "sample b32 vs bare", "sample b32 / b1", "sample b1 lean step (cpu)", "eval", "load first", "load cached",
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


def _gpu_checks(tmp_path, fail: str = "") -> subprocess.CompletedProcess:
    """benchmarks/gpu_checks.sh with stand-ins for nvidia-smi and Python (no GPU needed): the
    stand-in Python fails when its arguments match the extended regex `fail`, else succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tools = {"nvidia-smi": "echo 'Stand-in GPU, 1 MiB'\n",
             "python": 'if [ -n "$FAKE_FAIL" ] && echo "$*" | grep -Eq -- "$FAKE_FAIL"; then\n'
                       '  echo "stand-in failure: $*" >&2; exit 3\nfi\n'}
    for name, body in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": str(bin_dir / "python"), "OUT": str(tmp_path / "out"), "FAKE_FAIL": fail}
    env.pop("DRY_RUN", None)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_gpu_checks_exit_nonzero_and_name_the_failed_parts(tmp_path):
    ok = _gpu_checks(tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "failed" not in ok.stdout.lower()

    res = _gpu_checks(tmp_path, fail="-m pytest|--only scaling")
    assert res.returncode != 0, res.stdout[-2000:]
    assert "== benchmark rows on the GPU" in res.stdout  # every part ran after the failures
    summary = [line for line in res.stdout.splitlines() if line.startswith("== done")]
    assert len(summary) == 1 and "FAILED" in summary[0], res.stdout[-2000:]
    assert "cuda-marked tests" in summary[0] and "scaling row" in summary[0], summary
    assert "precision" not in summary[0] and "machine" not in summary[0], summary  # only those
    log = (tmp_path / "out" / "gpu-checks.log").read_text()
    assert log.strip().splitlines()[-1] == summary[0]
