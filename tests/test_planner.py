"""The planner: keys a user left unset, chosen from the text, the measured speed and the budget."""

import json

import pytest
import torch
import yaml

from conftest import FOODCHAIN, TINY, run_cli

# characters per second the probe measures for each (layers, hidden) at batch 16 x 100 on an
# idle 2-core CPU (a whole run reads RUN_EFFICIENCY of that); 2 x 512 and 3 x 512 as probed
# on 2026-12-02 on an alphabet of 224 (396 and 611 ms a step), the day 1 x 512 was measured
# best for 10 minutes
RATES = {(1, 64): 120_000, (1, 128): 80_000, (2, 128): 45_000, (2, 256): 22_000,
         (2, 512): 1600 / 0.396, (3, 512): 1600 / 0.611}
CPU = torch.device("cpu")


def fake_seconds(calls=None):
    def seconds(shape):
        if calls is not None:
            calls.append(shape)
        rate = RATES.get((shape.num_layers, shape.hidden_size),
                         2.9e9 / (shape.num_layers * shape.hidden_size ** 2))
        return shape.batch_size * shape.seq_len / rate
    return seconds


def plan(keys=(), train_chars=1_000_000, vocab=65, **sets):
    from charrnn.config import default_config
    from charrnn.planning.planner import plan_run
    overrides = ["train.plan=true", "train.threads=1"] + [f"{k}={v}" for k, v in sets.items()]
    cfg = default_config(overrides)
    return plan_run(cfg, set(keys) | {"train.threads"} | set(sets), train_chars=train_chars,
                    text_chars=int(train_chars / 0.9), vocab_size=vocab, device=CPU,
                    seconds=fake_seconds())


def test_two_minutes_of_a_megabyte_get_one_wide_layer_and_little_dropout():
    """2 minutes of Tiny Shakespeare (benchmarks/results/sizing-dropout-cpu2-2026-12-01.json):
    1 x 256 gave 1.589 with dropout 0 and with 0.1, 1 x 128 1.632, 2 x 128 with 0.3 1.763."""
    from charrnn.planning.planner import RUN_EFFICIENCY
    p = plan(**{"train.max_minutes": 2})
    m, t = p.config.model, p.config.train
    assert (m.type, m.num_layers, m.hidden_size, m.dropout) == ("lstm", 1, 256, 0.1)
    assert (t.batch_size, t.seq_len, t.max_minutes, t.plan) == (16, 100, 2, False)
    rate = 2.9e9 / 256 ** 2 * RUN_EFFICIENCY  # what fake_seconds gives 1 x 256
    assert p.chars_to_read == pytest.approx(rate * 120)
    assert f"{rate * 120 / 1_000_000:.1f} passes" in p.describe()[0]


def test_on_a_day_two_layers_of_256_are_fast_enough_they_are_the_plan(monkeypatch):
    """The best 2-minute hand choice on a faster day: 2 x 256, batch 16 (1,647 updates)."""
    monkeypatch.setitem(RATES, (2, 256), 31_000)
    p = plan(**{"train.max_minutes": 2})
    assert (p.config.model.num_layers, p.config.model.hidden_size) == (2, 256)


def test_a_small_model_over_a_few_passes_gets_no_dropout():
    """1 minute of Tiny Shakespeare, 1 x 128 over 4.3 passes: 1.683 without dropout, 1.786
    with 0.3 (benchmarks/results/sizing-quick-cpu2-2026-12-01.json and the planned run)."""
    p = plan(**{"train.max_minutes": 1, "model.hidden_size": 128, "model.num_layers": 1})
    assert p.passes > 3 and p.config.model.dropout == 0.0
    assert "exposure" in p.reasons["model.dropout"]


def test_a_short_text_gets_dropout_rather_than_a_tiny_model_and_a_huge_one_fewer_passes():
    """45,000 characters for 2 minutes: 1 x 64 scored 1.754, 1 x 256 with dropout 0.1 1.741 and
    2 x 256 with 0.3 1.691 (benchmarks/results/sizing-2min-cpu2-2026-12-02.json); the plan
    this gives, 1 x 256 with 0.3, 1.642 (sizing-50k-planned-cpu2-2026-12-02.json)."""
    tiny = plan(train_chars=45_000, vocab=59, **{"train.max_minutes": 2})
    assert (tiny.config.model.num_layers, tiny.config.model.hidden_size) == (1, 256)
    assert tiny.config.model.dropout == 0.3
    small = plan(train_chars=150_000, **{"train.max_minutes": 2})  # the licence texts
    assert (small.config.model.num_layers, small.config.model.hidden_size) == (1, 256)
    assert small.config.model.dropout == 0.3
    big = plan(train_chars=10_000_000, vocab=300, **{"train.max_minutes": 2})
    assert big.config.model.hidden_size == 256  # 2 x 512 makes too few updates in 2 minutes
    assert big.config.model.dropout == 0.0  # a quarter of one pass: nothing to overfit


def test_ten_minutes_of_a_megabyte_get_one_layer_of_512_with_light_dropout():
    """10 minutes of Tiny Shakespeare: 1 x 512 with dropout 0.1 and lr 6e-3 gave 1.434, the plan
    before it (2 x 256, dropout 0.3) 1.480 (benchmarks/results/planner-lr-cpu2-2026-12-02.json).
    2 x 512 and 3 x 512 make too few updates in 10 minutes at that day's speed."""
    p = plan(**{"train.max_minutes": 10})
    m = p.config.model
    assert (m.num_layers, m.hidden_size, m.dropout) == (1, 512, 0.1)
    assert p.config.train.lr == 6e-3


def test_a_key_the_user_set_is_kept_and_the_rest_fitted_around_it():
    p = plan(**{"train.max_minutes": 10, "model.hidden_size": 512})
    assert p.config.model.hidden_size == 512
    assert p.config.model.num_layers == 1 and p.config.model.dropout == 0.1
    assert p.config.train.lr == 6e-3
    assert "model.hidden_size" not in p.reasons and "model.dropout" in p.reasons


def test_with_the_width_fixed_the_deepest_shape_fast_enough_is_chosen(monkeypatch):
    """Fixing hidden_size makes some candidates the same and reorders them: they are still
    tried from the most parameters down."""
    monkeypatch.setitem(RATES, (2, 512), 7_000)  # 1,890 updates in 10 minutes
    p = plan(**{"train.max_minutes": 10, "model.hidden_size": 512})
    assert (p.config.model.num_layers, p.config.model.hidden_size) == (2, 512)


def test_a_few_thousand_characters_get_a_window_that_fits():
    p = plan(train_chars=2_700, **{"train.max_steps": 100})
    t = p.config.train
    assert t.batch_size * t.seq_len + 1 <= 2_700
    assert (p.config.model.num_layers, p.config.model.hidden_size) == (1, 64)


def test_a_step_budget_plans_without_timing_shapes():
    from charrnn.config import default_config
    from charrnn.planning.planner import plan_run
    calls = []
    cfg = default_config(["train.plan=true", "train.max_steps=300", "train.threads=1"])
    p = plan_run(cfg, {"train.max_steps", "train.threads"}, train_chars=50_000,
                 text_chars=55_000, vocab_size=40, device=CPU, seconds=fake_seconds(calls))
    assert calls == [] and p.config.train.max_steps == 300 and p.config.train.max_minutes is None
    assert p.chars_to_read == 300 * 16 * 100


def test_no_budget_means_the_default_minutes_less_the_probe():
    from charrnn.planning.planner import DEFAULT_MINUTES
    p = plan()
    assert p.minutes == DEFAULT_MINUTES
    assert DEFAULT_MINUTES * 0.99 <= p.config.train.max_minutes <= DEFAULT_MINUTES
    assert p.config.train.max_steps >= 1_000_000  # the time ends the run


def test_every_planned_key_has_a_reason_and_data_keys_are_never_planned():
    from charrnn.planning.planner import PLANNED
    p = plan(**{"train.max_minutes": 2})
    assert set(p.reasons) <= set(PLANNED) and "data.val_fraction" not in p.reasons
    lines = p.describe()
    for key in p.reasons:
        assert any(line.strip().startswith(f"{key} = ") for line in lines), key


def test_charrnn_plan_prints_json_and_trains_nothing(tmp_path):
    proc = run_cli("plan", "--data", str(FOODCHAIN), "--max-steps", "40", "--threads", "1",
                   "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["budget_steps"] == 40 and result["config"]["train"]["plan"] is False
    assert result["choices"]["model.hidden_size"]["reason"]
    assert not (tmp_path / "runs").exists()
    text = run_cli("plan", "--data", str(FOODCHAIN), "--max-steps", "40", "--threads", "1")
    assert text.stdout.startswith("plan: ") and "model.hidden_size = " in text.stdout


@pytest.mark.slow
def test_a_planned_run_saves_its_plan_and_a_resume_does_not_plan_again(tmp_path):
    text = tmp_path / "short.txt"
    text.write_text(FOODCHAIN.read_text()[:3_000])  # too short for one 64 x 100 window
    out = tmp_path / "run"
    proc = run_cli("train", "--data", str(text), "--max-steps", "20", "--threads", "1",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "plan: 3,000 characters" in proc.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["plan"] is False and saved["train"]["max_steps"] == 20
    assert saved["train"]["batch_size"] * saved["train"]["seq_len"] < 2_700
    again = run_cli("train", "--resume", str(out), "--max-steps", "30")
    assert again.returncode == 0, again.stderr
    assert "plan: " not in again.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == saved["model"]


@pytest.mark.slow
def test_a_config_plans_only_when_it_asks_and_only_what_it_leaves_out(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    del cfg["model"]["hidden_size"]
    cfg["data"]["path"] = str(FOODCHAIN)
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    plain = json.loads(run_cli("plan", str(path), "--max-steps", "40", "--json").stdout)
    assert plain["config"]["model"]["embedding_dim"] == 32  # the config's own value
    assert plain["config"]["train"]["batch_size"] == 16 and "model.hidden_size" in plain["choices"]
    out = tmp_path / "run"
    proc = run_cli("train", str(path), "--out", str(out), "--max-steps", "5")
    assert proc.returncode == 0 and "plan: " not in proc.stderr  # train.plan is not set
    proc = run_cli("train", str(path), "--out", str(out), "--max-steps", "5", "--force",
                   "--set", "train.plan=true")
    assert proc.returncode == 0 and "plan: " in proc.stderr, proc.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["embedding_dim"] == 32


def test_on_a_gpu_the_batch_grows_while_characters_per_second_do():
    from charrnn.config import default_config
    from charrnn.planning.planner import plan_run

    def seconds(shape):  # a step costs the same up to batch 256, then grows with the batch
        return 0.01 * max(1.0, shape.batch_size / 256) * shape.num_layers * shape.hidden_size / 512

    cfg = default_config(["train.plan=true", "train.max_minutes=2"])
    p = plan_run(cfg, {"train.max_minutes"}, train_chars=100_000_000, text_chars=110_000_000,
                 vocab_size=200, device=torch.device("cuda"), seconds=seconds)
    assert p.config.train.batch_size == 256
    assert p.config.train.threads is None  # no CPU threads to measure for a GPU run
    assert p.config.model.hidden_size >= 512  # a GPU trains a wide model in the time


@pytest.mark.parametrize("family,layers,hidden", [("lstm", 2, 256), ("gru", 3, 64), ("rnn", 1, 32)])
def test_the_planner_counts_the_parameters_the_built_model_has(family, layers, hidden):
    from charrnn.config import ModelConfig
    from charrnn.models import build_model, count_parameters as built
    from charrnn.planning.planner import Shape, count_parameters
    shape = Shape(family, 65, 48, hidden, layers, 16, 100)
    model = build_model(ModelConfig(type=family, embedding_dim=48, hidden_size=hidden,
                                    num_layers=layers), 65)
    assert count_parameters(shape) == built(model)


def test_when_two_layers_of_256_are_too_slow_one_wide_layer_beats_two_narrow_ones(monkeypatch):
    """Measured on a slow day: 2 x 256 read 15,107 chars/s (1,133 updates in 2 minutes), 1 x 256
    37,089; the 2-minute runs gave 1.634 nats for 1 x 256 and 1.698 for 2 x 128."""
    monkeypatch.setitem(RATES, (2, 256), 15_107)
    monkeypatch.setitem(RATES, (1, 256), 37_089)
    p = plan(**{"train.max_minutes": 2})
    assert (p.config.model.num_layers, p.config.model.hidden_size) == (1, 256)
