"""`charrnn export`: a slim model file that sample, eval and info load and resume refuses."""

import json
import os
import re

import pytest
import torch


def test_export_is_slim_and_loads_everywhere_but_resume(tiny_run, tmp_path, cli):
    out = tmp_path / "model.pt"
    code, _, err = cli("export", str(tiny_run), "--out", str(out))
    assert code == 0 and "exported" in err, err
    assert out.stat().st_size <= 0.4 * (tiny_run / "last.pt").stat().st_size
    state = torch.load(out, weights_only=True)
    assert state["kind"] == "export" and not {"optimizer", "rng", "hidden"} & set(state)
    args = ["--greedy", "--prime", "sharks", "--length", "40", "-q"]
    assert cli("sample", "-c", str(out), *args) == cli("sample", "-c",
                                                                str(tiny_run), *args)
    text = tmp_path / "text.txt"
    text.write_text("sharks feed on tuna.\ntuna feed on small fish.\n")
    ours = json.loads(cli("eval", "-c", str(out), str(text), "--json")[1])
    assert ours == json.loads(cli("eval", "-c", str(tiny_run), str(text), "--json")[1])
    show = ["--text", "sharks feed on tuna. tuna feed on small fish.", "--json", "--top", "3"]
    code, shown, err = cli("show", "-c", out, *show)
    assert code == 0, err
    assert shown == cli("show", "-c", tiny_run, *show)[1]  # the same surprise, char by char
    assert json.loads(shown)["bpc"] < 0.5  # the trained model's, not a fresh one's (~4.5)
    info = json.loads(cli("info", str(out), "--json")[1])
    assert info["parameters"] > 10_000 and info["vocab_size"] == len(state["vocab"])
    assert info["kind"] == "export" and "exported model" in cli("info", out)[1]
    code, _, err = cli("train", "--resume", str(out))
    assert code == 2 and "exported model" in err and "cannot be resumed" in err
    code, _, err = cli("export", str(tiny_run), "--out", str(out))
    assert code == 2 and "already exists" in err and out.stat().st_size > 0
    assert cli("export", str(tiny_run), "--out", str(out), "--force", "-q")[0] == 0
    code, _, err = cli("export", str(tiny_run), "--out", str(tmp_path / "no" / "m.pt"))
    assert code == 2 and err.startswith("error: ") and "does not exist" in err


def test_the_checkpoint_docstring_names_every_key_of_an_export(tiny_run, tmp_path):
    from charrnn import checkpoint
    from charrnn.export import export_model
    paragraph = next(p for p in checkpoint.__doc__.split("\n\n") if p.startswith("An exported"))
    for quantize in (None, "int8"):
        out = tmp_path / f"{quantize}.pt"
        export_model(tiny_run, out, quantize=quantize)
        keys = set(torch.load(out, weights_only=True)) - {"format", "format_version",
                                                          "charrnn_version"}
        assert ("quantization" in keys) == (quantize is not None)
        assert keys <= set(re.findall(r"\w+", paragraph)), keys - set(re.findall(r"\w+", paragraph))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc, which takes no files")
def test_an_out_that_cannot_be_written_is_the_users_error(tiny_run, cli):
    code, _, err = cli("export", str(tiny_run), "--out", "/proc/charrnn-model.pt")
    assert code == 2 and err.startswith("error: --out /proc/charrnn-model.pt cannot be written")
    assert "intact" not in err and len(err.strip().splitlines()) == 1, err
