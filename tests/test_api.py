"""The Python API: charrnn.load (generate, score, info) and charrnn.train, as the README shows."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn.errors import CharRNNError, CheckpointError, ConfigError, DataError, SamplingError
from conftest import FOODCHAIN, ROOT, TINY, cli_env, run_cli

CPU = torch.device("cpu")


def _python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=cli_env(), timeout=timeout)


def test_import_charrnn_leaves_torch_out_until_the_first_call(tiny_run, tmp_path):
    proc = _python(f"""
import sys
import charrnn
assert "torch" not in sys.modules, "import charrnn imported torch"
load = charrnn.load
assert "torch" not in sys.modules, "charrnn.load imported torch before it was called"
model = charrnn.load({str(tiny_run)!r}, device="cpu")
assert "torch" in sys.modules
import charrnn.training.loop as loop
assert charrnn.train is charrnn.api.train and loop.train is not charrnn.train
import json
print(json.dumps([model.step, "".join(model.generate("sharks", length=5, seed=1))]))
""", tmp_path)
    assert proc.returncode == 0, proc.stderr
    step, text = json.loads(proc.stdout)
    assert int(step) > 0 and len(text) == 5


@pytest.mark.parametrize("flags, options", [
    (["--seed", "3", "--length", "80"], {"seed": 3, "length": 80}),
    (["--seed", "4", "--length", "60", "--temperature", "1.3", "--top-k", "5", "--top-p", "0.9"],
     {"seed": 4, "length": 60, "temperature": 1.3, "top_k": 5, "top_p": 0.9}),
    (["--greedy", "--length", "40", "--stop", "."], {"greedy": True, "length": 40, "stop": ["."]}),
    (["--seed", "5"], {"seed": 5}),  # the run's own sample length and temperature
])
def test_generate_gives_what_charrnn_sample_prints_for_a_seed(tiny_run, cli, flags, options):
    code, out, err = cli("sample", "-c", tiny_run, "--device", "cpu", "--prime", "sharks", *flags)
    assert code == 0, err
    model = charrnn.load(tiny_run, device="cpu")
    text = "sharks" + "".join(model.generate("sharks", **options))
    assert out == text + ("" if text.endswith("\n") else "\n")
    assert len(text) > len("sharks")


def test_generate_many_and_beam_are_the_cli_batch_and_beam(tiny_run, cli):
    model = charrnn.load(tiny_run, device="cpu")
    code, out, err = cli("sample", "-c", tiny_run, "--device", "cpu", "--prime-file", "-",
                         "--length", "30", "--seed", "2", "--json", stdin="sharks\ntuna\n")
    assert code == 0, err
    steps = list(model.generate_many(["sharks", "tuna"], 30, seed=2))
    assert [d["text"] for d in json.loads(out)] == ["".join(s) for s in zip(*steps)]
    code, out, err = cli("sample", "-c", tiny_run, "--device", "cpu", "--prime", "tuna",
                         "--beam", "3", "--num-samples", "2", "--length", "20", "--json")
    assert code == 0, err
    assert [[d["text"], d["score"]] for d in json.loads(out)] == \
        [list(found) for found in model.beam("tuna", 3, 20, results=2)]


def test_generating_leaves_the_warning_filters_and_onednn_flags_as_they_were(tiny_run):
    model = charrnn.load(tiny_run, device="cpu")
    onednn = torch.backends.mkldnn.enabled
    torch.set_float32_matmul_precision("high")  # the setting under which torch warns of TF32
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            filters = list(warnings.filters)
            text = "".join(model.generate("sharks", length=20, seed=1))
            model.beam("tuna", 2, 10)
            list(model.generate_many(["sharks", "tuna"], 10, seed=1))
            assert warnings.filters == filters
    finally:
        torch.set_float32_matmul_precision("highest")
    assert len(text) == 20 and not [w for w in caught if "oneDNN" in str(w.message)]
    assert torch.backends.mkldnn.enabled == onednn


def test_score_is_charrnn_eval_with_per_character_log_probs(tiny_run, cli, tmp_path):
    text = FOODCHAIN.read_text()[:3000]
    (tmp_path / "t.txt").write_text(text)
    code, out, err = cli("eval", "-c", tiny_run, "--device", "cpu", "--json", tmp_path / "t.txt")
    assert code == 0, err
    model = charrnn.load(tiny_run, device="cpu")
    score = model.score(text)
    assert score.summary() == json.loads(out)
    assert score.log_probs.shape == (len(text),) and math.isnan(score.log_probs[0])
    code, out, err = cli("show", "-c", tiny_run, "--device", "cpu", "--json", "--text",
                         text[:300])
    assert code == 0, err
    shown = [r["logprob"] for r in json.loads(out)["records"][1:]]
    assert shown == pytest.approx(model.score(text[:300]).log_probs[1:].tolist(), abs=1e-4)
    # unknown characters: an error, or left out of both the loss and the log-probs
    with pytest.raises(DataError, match="not in the model's vocab"):
        model.score("sharks \u2603 feed")
    skipped = model.score("sharks \u2603\u2603 feed", unknown="skip")
    assert skipped.skipped == 2 and skipped.log_probs.shape == (len("sharks  feed"),)
    assert model.score("sharks feed", log_probs=False).log_probs is None


def test_info_is_what_charrnn_info_reports(tiny_run, cli):
    code, out, err = cli("info", tiny_run, "--json")
    assert code == 0, err
    info = charrnn.load(tiny_run, device="cpu").info
    assert info == json.loads(out)
    assert info["step"] > 0 and info["parameters"] > 0 and info["config"]["model"]["type"]


def test_the_api_raises_charrnn_errors(tiny_run, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        charrnn.load(tmp_path / "nothing.pt")
    model = charrnn.load(tiny_run, device="cpu")
    with pytest.raises(SamplingError, match="temperature"):
        model.generate("sharks", temperature=-1)  # at the call, not at the first character
    with pytest.raises(DataError, match="prime"):
        model.generate("sharks \u2603")
    with pytest.raises(SamplingError, match="seed"):
        model.generate("sharks", seed=-1)
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        charrnn.train(TINY, out=tmp_path / "r", max_step=5)
    with pytest.raises(ConfigError, match="train.lr"):
        charrnn.train(TINY, out=tmp_path / "r", lr="fast")
    assert not (tmp_path / "r").exists()
    assert issubclass(ConfigError, CharRNNError)


def _handlers():
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


@pytest.mark.slow
def test_train_returns_the_run_and_leaves_threads_signals_and_rng_alone(tmp_path):
    threads = 3 if torch.get_num_threads() != 3 else 2
    torch.set_num_threads(threads)
    before, seen = _handlers(), []
    rng = torch.get_rng_state()
    try:
        run = charrnn.train(str(TINY), out=tmp_path / "run", max_steps=12, eval_every=6,
                            threads=1, on_event=lambda kind, info: seen.append(
                                (kind, _handlers(), torch.get_num_threads())))
        during = {(h == before, n) for kind, h, n in seen if kind == "step" or kind == "eval"}
        assert during == {(True, 1)}  # no handler installed; trains on the thread asked for
        assert torch.get_num_threads() == threads and _handlers() == before
        assert torch.equal(torch.get_rng_state(), rng)
        assert run.run_dir == tmp_path / "run" and run.step == 12 and run.stopped_by == "max_steps"
        assert run.val_loss is not None and (run.run_dir / "best.pt").is_file()
        # the same settings given as a config and --set: the same run, loss for loss
        proc = run_cli("train", str(TINY), "--out", str(tmp_path / "cli"), "--max-steps", "12",
                       "--set", "train.eval_every=6", "--threads", "1", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "cli" / "metrics.jsonl").read_text().count("val_loss") == \
            (run.run_dir / "metrics.jsonl").read_text().count("val_loss") == 2
        assert charrnn.load(tmp_path / "cli").info["val_loss"] == run.val_loss
        model = charrnn.load(run.run_dir, device="cpu")
        "".join(model.generate("sharks", length=30))
        model.score(FOODCHAIN.read_text()[:1000])
        assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.set_num_threads(threads)


def test_train_overrides_by_name_in_full_and_data(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(FOODCHAIN.read_text()[:4000])
    threads, handlers = torch.get_num_threads(), _handlers()
    run = charrnn.train(TINY, data=text, out=tmp_path / "r", threads=threads + 1,
                        **{"train.max_steps": 3, "hidden_size": 16, "eval_every": 3})
    assert torch.get_num_threads() == threads and _handlers() == handlers
    saved = (run.run_dir / "config.yaml").read_text()
    assert run.step == 3 and "hidden_size: 16" in saved and f"path: {text}" in saved
    more = charrnn.train(resume=run.run_dir, max_steps=5)
    assert more.step == 5 and more.run_dir == run.run_dir


def _readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    return next(b for b in blocks if re.search(r"^import charrnn", b, re.M))


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path):
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    proc = run_cli("train", "configs/tiny.yaml", "--out", "runs/demo", "--threads", "1",
                   "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _python(_readme_block(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sharks") and "bits/char" in proc.stdout
    assert (tmp_path / "runs" / "api" / "best.pt").is_file()


def test_train_keeps_the_cuda_generator_of_the_device_a_run_uses(monkeypatch):
    """Kept even where CUDA is not initialized yet (the run initializes and seeds it); no other
    GPU's is asked for (that would start CUDA there) or seeded, and a run on the CPU seeds none."""
    from charrnn import api
    from charrnn.device import cuda_index, seed_everything
    forked, seeded = [], []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.random, "fork_rng",
                        lambda devices: forked.append(devices) or contextlib.nullcontext())
    for devices in ([1], []):
        with api._global_state_kept(cuda_devices=devices):
            pass
    assert forked == [[1], []]
    assert cuda_index(torch.device("cuda", 2)) == 2
    monkeypatch.undo()

    class Generator:
        def __init__(self):
            self.seed = None

        def manual_seed(self, seed):
            self.seed = seed

    gpus = [Generator(), Generator()]
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "default_generators", gpus, raising=False)
    with torch.random.fork_rng(devices=[]):
        seed_everything(3, CPU)
        assert torch.initial_seed() == 3 and [g.seed for g in gpus] == [None, None]
        seed_everything(4, torch.device("cuda", 1))
        assert torch.initial_seed() == 4 and [g.seed for g in gpus] == [None, 4]
    assert seeded == []  # no GPU but the run's is seeded
