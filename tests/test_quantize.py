"""`charrnn export --quantize int8|bf16`: a smaller model file that every command loads."""

import json

import pytest
import torch

from charrnn.checkpoint import load_checkpoint, save_checkpoint

TEXT = "sharks feed on tuna.\ntuna feed on small fish.\nsmall fish feed on shrimp.\n"


def _fresh_checkpoint(tiny_run, path, **model):
    """The tiny run's best.pt with another model shape and fresh weights (file sizes and the
    load path do not depend on training)."""
    from charrnn.config import config_from_dict
    from charrnn.models import build_model
    state = load_checkpoint(tiny_run / "best.pt")
    state["config"]["model"].update(model)
    torch.manual_seed(0)
    net = build_model(config_from_dict(state["config"]).model, len(state["vocab"]))
    state["model"] = net.state_dict()
    save_checkpoint({k: v for k, v in state.items() if k not in ("path", "format_version")},
                    path)
    return path


def _loss(cli, model, text):
    code, out, err = cli("eval", "-c", model, text, "--json")
    assert code == 0, err
    return json.loads(out)["loss"]


def test_int8_and_bf16_exports_load_in_every_command(tiny_run, tmp_path, cli):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    plain = tmp_path / "fp32.pt"
    assert cli("export", tiny_run, "--out", plain, "-q")[0] == 0
    reference = _loss(cli, plain, text)
    for mode, matrix_dtype in (("int8", torch.int8), ("bf16", torch.bfloat16)):
        out = tmp_path / f"{mode}.pt"
        code, _, err = cli("export", tiny_run, "--out", out, "--quantize", mode)
        assert code == 0 and mode in err, err
        stored = torch.load(out, weights_only=True)  # plain tensors, nothing else unpickled
        assert stored["quantization"]["mode"] == mode
        assert stored["format_version"] == 2  # a reader of format 1 only refuses it
        assert stored["model"]["embed.weight"].dtype == matrix_dtype
        assert stored["model"]["rnn.weight_hh_l0"].dtype == matrix_dtype
        assert stored["model"]["head.weight"].dtype == matrix_dtype
        assert stored["model"]["head.bias"].dtype == torch.float32  # vectors stay fp32
        loaded = load_checkpoint(out)
        assert all(t.dtype == torch.float32 for t in loaded["model"].values())
        assert _loss(cli, out, text) == pytest.approx(reference, abs=0.02)
        code, sampled, err = cli("sample", "-c", out, "--greedy", "--prime", "sharks",
                                 "--length", "30", "-q")
        assert code == 0 and sampled.startswith("sharks feed on"), err
        code, shown, err = cli("show", "-c", out, "--text", TEXT, "--json")
        assert code == 0 and json.loads(shown)["bpc"] < 1.0, err
        info = json.loads(cli("info", out, "--json")[1])
        assert info["quantization"] == mode and info["kind"] == "export"
        assert info["parameters"] == json.loads(cli("info", plain, "--json")[1])["parameters"]
        assert f"quantized to {mode}" in cli("info", out)[1]
        code, _, err = cli("train", "--resume", out)
        assert code == 2 and "cannot be resumed" in err
        packed, restored = tmp_path / f"{mode}.crz", tmp_path / f"{mode}.txt"
        code, _, err = cli("compress", "-c", out, text, "-o", packed, "-q")
        assert code == 0, err
        code, _, err = cli("decompress", "-c", out, packed, "-o", restored, "-q")
        assert code == 0 and restored.read_bytes() == text.read_bytes(), err
    assert json.loads(cli("info", plain, "--json")[1])["quantization"] is None
    assert torch.load(plain, weights_only=True)["format_version"] == 1  # as before


def test_int8_export_is_under_a_third_of_fp32(tiny_run, tmp_path, cli):
    source = _fresh_checkpoint(tiny_run, tmp_path / "big.pt", hidden_size=256, num_layers=2)
    sizes = {}
    for mode in (None, "int8", "bf16"):
        out = tmp_path / f"{mode}.pt"
        assert cli("export", source, "--out", out, "-q",
                   *(["--quantize", mode] if mode else []))[0] == 0
        sizes[mode] = out.stat().st_size
    assert sizes["int8"] <= 0.30 * sizes[None], sizes
    assert sizes["bf16"] <= 0.55 * sizes[None], sizes


@pytest.mark.parametrize("family", ["rnn", "gru", "lstm"])
def test_every_family_round_trips(tiny_run, tmp_path, cli, family):
    from charrnn.quantize import quantize_weights
    source = _fresh_checkpoint(tiny_run, tmp_path / "src.pt", type=family, num_layers=2)
    weights = load_checkpoint(source)["model"]
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    reference = _loss(cli, source, text)
    for mode in ("int8", "bf16"):
        stored, record = quantize_weights(weights, mode)
        out = tmp_path / f"{mode}.pt"
        assert cli("export", source, "--out", out, "--quantize", mode, "-q")[0] == 0
        loaded = load_checkpoint(out)["model"]
        for name, w in weights.items():
            step = (w.abs().amax(1, keepdim=True) / 127 if mode == "int8" else w.abs() / 128
                    ) if w.dim() > 1 else 0
            assert torch.all((loaded[name] - w).abs() <= step / 2 + 1e-7), name
            assert stored[name].dtype == (w.dtype if w.dim() == 1 else
                                          torch.int8 if mode == "int8" else torch.bfloat16)
        assert _loss(cli, out, text) == pytest.approx(reference, abs=0.02)


def test_bad_quantize_and_training_checkpoint_out_are_refused(run_copy, tmp_path, cli):
    code, _, err = cli("export", run_copy, "--out", tmp_path / "m.pt", "--quantize", "int4")
    assert code == 2 and err.startswith("error: ") and "int8" in err and "bf16" in err, err
    assert not (tmp_path / "m.pt").exists()
    before = (run_copy / "last.pt").read_bytes()
    code, _, err = cli("export", run_copy, "--out", run_copy / "last.pt", "--force",
                       "--quantize", "int8")
    assert code == 2 and "training checkpoint" in err, err
    assert (run_copy / "last.pt").read_bytes() == before


def test_a_corrupt_quantization_record_is_an_error(tiny_run, tmp_path):
    from charrnn.errors import CheckpointError
    out = tmp_path / "int8.pt"
    from charrnn.export import export_model
    export_model(tiny_run, out, quantize="int8")
    state = torch.load(out, weights_only=True)
    del state["quantization"]["scales"]["head.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="head.weight"):
        load_checkpoint(tmp_path / "broken.pt")
    state["quantization"]["mode"] = "int4"
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="int4"):
        load_checkpoint(tmp_path / "other.pt")
