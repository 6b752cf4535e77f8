"""Fine-tuning (`train --init-from`): the shape comes from the checkpoint, the vocab is kept
and grown by the new text's characters, and the weights of the old characters carry over."""

import pytest
import torch

from conftest import FOODCHAIN, TINY, run_cli

NEW = "SHARKS FEED ON TUNA!\nTUNA FEED ON SMALL FISH!\n"


@pytest.fixture
def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text((FOODCHAIN.read_text() + NEW * 8) * 2)
    return path


def test_new_characters_are_added_and_old_predictions_kept(tiny_run, new_text):
    from charrnn.checkpoint import load_checkpoint
    from charrnn.config import load_config
    from charrnn.text.data import load_training_corpus
    from charrnn.text.data import widen
    from charrnn.training.finetune import prepare
    from charrnn.models import build_model

    cfg = load_config(TINY, [f"data.path={new_text}"])
    start = prepare(str(tiny_run), cfg, load_training_corpus(cfg))
    old = load_checkpoint(tiny_run / "best.pt")
    assert start.added == sorted(set(NEW) - set(old["vocab"]))
    vocab = start.corpus.vocab
    assert vocab.chars == sorted(set(old["vocab"]) | set(NEW))
    assert vocab.decode(start.corpus.ids) == new_text.read_text()
    before, after = build_model(cfg.model, len(old["vocab"])), build_model(cfg.model, len(vocab))
    before.load_state_dict(old["model"])
    after.load_state_dict(start.weights)
    ids = torch.tensor([[vocab.index[c] for c in "sharks feed on"]])
    kept = torch.tensor([vocab.index[c] for c in old["vocab"]])
    with torch.no_grad():
        want = before(torch.tensor([[old["vocab"].index(c) for c in "sharks feed on"]]))[0]
        got = after(ids)[0]
    assert torch.allclose(got[..., kept], want, atol=1e-5)
    # a resumed fine-tuning run reads its text in the same, wider vocab
    assert torch.equal(widen(load_training_corpus(cfg), vocab.chars, 0.1).ids, start.corpus.ids)


@pytest.mark.parametrize("args, message", [
    (["--set", "model.hidden_size=64"], "the checkpoint's model is lstm 1 x 128 (embedding 32) "
                                        "but the config asks for lstm 1 x 64"),
    (["--set", "data.unknown=error"], "holds 16 character(s) that the model lacks: '!', 'A'"),
    (["--resume", "somewhere"], "--init-from starts a new run and --resume continues one"),
])
def test_bad_fine_tuning(tiny_run, new_text, tmp_path, cli, args, message):
    code, out, err = cli("train", TINY, "--data", new_text, "--init-from", tiny_run, "--out",
                         tmp_path / "ft", *args)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "ft").exists()


def test_without_a_config_the_shape_comes_from_the_checkpoint(tiny_run, new_text, tmp_path, cli):
    out = tmp_path / "ft"
    code, _, err = cli("train", "--data", new_text, "--init-from", tiny_run, "--out", out,
                       "--max-steps", "0", "--set", "train.device=cpu")
    assert code == 0, err
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["config"]["model"]["hidden_size"] == 128 and saved["step"] == 0
    assert set(NEW) <= set(saved["vocab"])


@pytest.mark.slow
def test_fine_tuned_model_writes_the_new_characters(tiny_run, new_text, tmp_path):
    out = tmp_path / "ft"
    proc = run_cli("train", str(TINY), "--data", str(new_text), "--init-from", str(tiny_run),
                   "--out", str(out), "--max-steps", "100")
    assert proc.returncode == 0, proc.stderr
    assert "from step 0 to 100" in proc.stderr and "added '!', 'A'" in proc.stderr
    sample = run_cli("sample", "-c", str(out), "--prime", "SHARKS", "--greedy", "--length", "14")
    # its new characters: capitals and '!' (the exact greedy text after 100 steps is chaotic in
    # the last bits of the arithmetic, which differ between CPUs: "SHARKS FEED ON TUNA!",
    # "SHARKS FEE ON TUNA!" and "SHARKS FE ON TUNA!\nT" have been seen)
    written = sample.stdout.rstrip("\n")
    assert " TUNA!" in written and written == written.upper(), (written, sample.stderr)
    proc = run_cli("train", "--resume", str(out), "--max-steps", "110", "-q")
    assert proc.returncode == 0, proc.stderr
