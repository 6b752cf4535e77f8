"""The speed probe: thread counts chosen by measurement, cached per machine, shape and torch."""

import json
import math
import os

import pytest

from conftest import TINY, run_cli

SHAPE = dict(family="lstm", vocab_size=23, embedding_dim=32, hidden_size=128, num_layers=1,
             batch_size=16, seq_len=32)


@pytest.fixture
def fake_timer(monkeypatch, tmp_path):
    """time_step replaced by a table of seconds per thread count; the calls are recorded;
    a cache folder of the test's own."""
    from charrnn.planning import speed
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    calls, seconds = [], {1: 0.030, 2: 0.050, 4: 0.020}

    def fake(shape, device, threads=None):
        calls.append(threads)
        return seconds[threads]

    monkeypatch.setattr(speed, "time_step", fake)
    return calls, seconds


def test_the_fastest_count_is_chosen_and_cached(fake_timer):
    from charrnn.planning.speed import Shape, choose_threads, speed_file
    calls, _ = fake_timer
    first = choose_threads(Shape(**SHAPE), candidates=[1, 2, 4])
    assert (first.threads, first.cached, sorted(calls)) == (4, False, [1, 2, 4])
    assert first.seconds == {1: 0.030, 2: 0.050, 4: 0.020}
    again = choose_threads(Shape(**SHAPE), candidates=[1, 2, 4])
    assert (again.threads, again.cached, len(calls)) == (4, True, 3)  # no second probe
    table = json.loads(speed_file().read_text())
    (machine,) = table["machines"]
    assert "torch " in machine and machine.startswith("cpu|")


def test_reprobe_measures_again_and_another_shape_is_measured_apart(fake_timer):
    from charrnn.planning.speed import Shape, choose_threads
    calls, seconds = fake_timer
    choose_threads(Shape(**SHAPE), candidates=[1, 2])
    seconds[2] = 0.010  # the machine has become idler
    assert choose_threads(Shape(**SHAPE), candidates=[1, 2]).threads == 1  # cached
    redone = choose_threads(Shape(**SHAPE), candidates=[1, 2], reprobe=True)
    assert (redone.threads, redone.cached, len(calls)) == (2, False, 4)
    other = Shape(**{**SHAPE, "hidden_size": 256})
    assert choose_threads(other, candidates=[1, 2]).cached is False


def test_within_the_noise_the_fewer_threads_win(fake_timer):
    from charrnn.planning.speed import Shape, choose_threads
    _, seconds = fake_timer
    seconds.update({1: 0.0200, 2: 0.0195})  # 2.5% apart: the same speed
    assert choose_threads(Shape(**SHAPE), candidates=[1, 2]).threads == 1


def test_a_damaged_or_older_speed_file_is_measured_again(fake_timer):
    from charrnn.planning.speed import Shape, choose_threads, speed_file
    calls, _ = fake_timer
    speed_file().parent.mkdir(parents=True, exist_ok=True)
    for content in ("{not json", json.dumps({"format": 0, "machines": {}})):
        speed_file().write_text(content)
        assert choose_threads(Shape(**SHAPE), candidates=[1, 2]).cached is False
    assert json.loads(speed_file().read_text())["format"] == 1


def test_a_real_probe_times_a_training_step():
    import torch

    from charrnn.planning.speed import Shape, time_step
    before = torch.get_num_threads()
    seconds = time_step(Shape(**{**SHAPE, "hidden_size": 32, "batch_size": 4}),
                        torch.device("cpu"), threads=1)
    assert 0 < seconds < 5 and math.isfinite(seconds)
    assert torch.get_num_threads() == before  # the caller's thread count is restored


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no thread count to choose")
def test_train_measures_threads_once_then_reuses_them(tmp_path):
    from charrnn.planning.speed import SPEED_FORMAT
    cache = tmp_path / "cache"
    env = {"CHARRNN_CACHE_DIR": str(cache)}
    args = ("train", str(TINY), "--out", str(tmp_path / "run"), "--max-steps", "5", "--force")
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "threads: " in first.stderr and "(measured, per step by threads: 1: " in first.stderr
    table = json.loads((cache / "probe" / "speed.json").read_text())
    assert table["format"] == SPEED_FORMAT
    second = run_cli(*args, env=env)
    assert "(cached measurement" in second.stderr, second.stderr
    third = run_cli(*args, "--reprobe", env=env)
    assert "(measured, per step" in third.stderr, third.stderr


def test_threads_set_by_the_user_are_not_measured(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("train", str(TINY), "--out", str(tmp_path / "run"), "--max-steps", "5",
                   "--threads", "1", env={"CHARRNN_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "per step by threads" not in proc.stderr
    assert not (cache / "probe" / "speed.json").exists()


def test_the_corpus_cache_neither_lists_nor_clears_the_speed_file(fake_timer):
    from charrnn.text.cache import clear, list_entries
    from charrnn.planning.speed import Shape, choose_threads, speed_file
    choose_threads(Shape(**SHAPE), candidates=[1, 2])
    assert list_entries() == [] and clear() == (0, 0)
    assert speed_file().is_file()
