"""The benchmark harness: its rows register by group, and `benchmarks/bench.py --quick` runs
and reports (the figures themselves are not asserted: they depend on the machine and its load).
"""

import json
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
