"""`charrnn show`: surprise in a terminal (colour, or plain markers), --json, and the HTML page
opened in a real headless browser."""

from __future__ import annotations

import json
import math
import shutil
import time

import pytest

from charrnn.cli import app as cli

from conftest import FOODCHAIN, peak_rss, run_cli
from ptyutil import ESC, run_in_pty

TEXT = "sharks feed on tuna.\ntuna feed on sea plants.\nmicrobes feed on fish."


def test_show_in_a_terminal_colours_each_character_by_surprise(tiny_run):
    out = run_in_pty(["show", "-c", str(tiny_run), "--text", TEXT, "-q"])
    assert out.count(ESC + "[48;5;") > 5  # backgrounds on the surprising characters
    assert "surprise (bits)" in out and "bits/char over 67 predicted characters" in out
    plain = run_in_pty(["show", "-c", str(tiny_run), "--text", TEXT, "-q"],
                       env={"NO_COLOR": "1"})
    assert ESC not in plain and "'#' 8+" in plain


def test_show_into_a_pipe_marks_surprise_under_each_line(tiny_run):
    proc = run_cli("show", "-c", str(tiny_run), "--text", TEXT, "--top", "3")
    assert proc.returncode == 0 and "using checkpoint" in proc.stderr, proc.stderr
    assert ESC not in proc.stdout
    lines = proc.stdout.splitlines()
    k = lines.index("microbes feed on fish.")  # the model has never seen microbes eat fish
    assert lines[k + 1][-5:].strip() and set(lines[k + 1]) <= set(" .-+#")
    assert lines[0] == "sharks feed on tuna."  # a line it knows by heart has no markers
    points = [line for line in lines if "bits at" in line]
    assert len(points) == 10 and all(line.count("%") == 3 for line in points)
    bits = [float(line.split()[0]) for line in points]
    assert bits == sorted(bits, reverse=True)  # the most surprising first


def _probe(text: str, bits: list[float]):
    """A Probe of `text` whose characters after the first cost `bits` each."""
    import torch

    from charrnn.analysis.probe import Probe

    logprobs = torch.tensor([math.nan] + [-b * math.log(2) for b in bits])
    chars = sorted(set(text))
    return Probe(text, logprobs, torch.zeros(len(text), 2, dtype=torch.long),
                 torch.full((len(text), 2), 0.5), chars)


def test_markers_sit_under_their_characters_by_display_column():
    """Wide (CJK) characters take two columns, tabs keep their place, a combining mark none."""
    from charrnn.cli.view import terminal_view

    text = "ab鲨鱼cd\n鱼\t鲨x\ne\u0301f"
    surprising = {"c", "x", "f"}
    bits = [9.0 if ch in surprising else 0.1 for ch in text[1:]]
    lines = terminal_view(_probe(text, bits), color=False).split("\n")
    assert lines[:6] == ["ab鲨鱼cd", "      #", "鱼\t鲨x", "  \t  #", "e\u0301f", " #"]


def test_show_json_has_a_record_per_character(tiny_run):
    proc = run_cli("show", "-c", str(tiny_run), "--text", TEXT, "--json", "--top", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    records = out["records"]
    assert "".join(r["char"] for r in records) == TEXT and out["chars"] == len(TEXT)
    assert records[0]["logprob"] is None and records[0]["top"] is None
    assert all(r["logprob"] <= 0 and len(r["top"]) == 2 for r in records[1:])
    assert records[1]["top"][0][1] >= records[1]["top"][1][1]
    mean = -sum(r["logprob"] for r in records[1:]) / (len(TEXT) - 1)
    assert out["loss"] == pytest.approx(mean, abs=1e-4)


@pytest.mark.parametrize("args,message", [
    ([], "give the text to show"),
    (["--text", "ab", "{tmp}/t.txt"], "give the text to show"),
    (["--text", "sharks feed on zebras"], "not in the model's vocab: 'z'"),
    (["--text", "s"], "at least 2 characters"),
    (["--text", "sharks", "--html", "{tmp}/no/such/page.html"], "does not exist"),
])
def test_show_bad_input_is_one_error_line(tiny_run, tmp_path, capsys, args, message):
    argv = ["show", "-c", str(tiny_run)] + [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: ") and message in err[-1]
    assert not any(line.startswith("error") for line in err[:-1])


def test_show_html_replaces_no_file_without_force(tiny_run, tmp_path, capsys):
    checkpoint = tiny_run / "best.pt"
    before = checkpoint.read_bytes()
    for page, message in ((checkpoint, "already exists (add --force"), (tmp_path, "directory")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["show", "-c", str(tiny_run), "--text", "sharks", "--html", str(page)])
        err = capsys.readouterr().err.splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and message in err[0], err
    assert checkpoint.read_bytes() == before
    page = tmp_path / "page.html"
    page.write_text("mine")
    args = ["show", "-c", str(tiny_run), "--text", "sharks", "--html", str(page), "-q"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2 and page.read_text() == "mine"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args + ["--force"])
    assert exit_info.value.code == 0 and "<html" in page.read_text().lower()


@pytest.mark.slow
def test_show_reads_a_long_text_in_chunks(tiny_run, tmp_path):
    """Texts of 50,000 and 200,000 characters into a pipe: the longer one costs what is kept
    per character (the text, its ids, each character's log-prob and top choices, its marker:
    about 30 bytes), not the model's activations over all of it (3.2 KB a character when a
    text was read in one piece)."""
    text, peaks = FOODCHAIN.read_text(), {}
    for chars in (50_000, 200_000):
        source = tmp_path / f"text{chars}.txt"
        source.write_text((text * (chars // len(text) + 1))[:chars])
        code, peaks[chars] = peak_rss("show", "-c", str(tiny_run), str(source), "--top", "3",
                                      "-q")
        assert code == 0
    per_char = (peaks[200_000] - peaks[50_000]) / 150_000
    assert per_char < 100, f"{per_char:.0f} bytes a character"


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium (make test-deps installs it)")
    return sync_api, chromium


def test_the_page_in_a_headless_browser(tiny_run, tmp_path):
    """Text shown, colours that vary, a unit recolours it, the likeliest characters on hover,
    no console errors; a 10,000-character text."""
    sync_api, chromium = _browser()
    text = (FOODCHAIN.read_text() * 3)[:10_000]
    source = tmp_path / "text.txt"
    source.write_text(text)
    page_file = tmp_path / "page.html"
    proc = run_cli("show", "-c", str(tiny_run), str(source), "--html", str(page_file))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            started = time.monotonic()
            page.goto(page_file.as_uri())
            page.wait_for_selector("body[data-ready='1']")
            opened = time.monotonic() - started
            assert page.inner_text("#text").replace("\r", "") == text
            colours = lambda: page.eval_on_selector_all(  # noqa: E731
                "#text span", "spans => spans.map(s => getComputedStyle(s).backgroundColor)")
            surprise = colours()
            assert len(surprise) == len(text) and len(set(surprise)) > 5

            page.hover("#text span >> nth=30")
            assert page.locator("#info table.top tr").count() == 5
            assert "%" in page.inner_text("#info")

            page.click("#telling button >> nth=0")  # the largest variance of h
            assert page.input_value("#mode") == "unit" and page.input_value("#kind") == "h"
            unit = colours()
            assert unit != surprise and len(set(unit)) > 5
            page.select_option("#kind", "f")  # the forget gate of the same unit
            assert colours() != unit
            page.fill("#unit", "3")
            assert "forget gate f 3" in page.inner_text("#what")
            assert errors == [] and requests == [page_file.as_uri()]  # nothing fetched
        finally:
            browser.close()
    assert opened < 10  # about a second on a quiet machine; generous for a busy one

