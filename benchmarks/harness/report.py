"""The report: the Markdown table (the README's performance table) and the JSON file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


def _fmt(value, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "exact":  # a round trip: 1 when the text came back byte for byte
        return "exact" if value else "**differs**"
    if unit in ("chars/s", "MB/s", "MB", "B"):
        return f"{value:,.0f} {unit}"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.2f} {unit}"


def _target_text(r: dict) -> str:
    t = r["target"]
    if t is None:
        return "—"
    op = {">=": "≥", "<=": "≤", "<": "<"}[t["op"]]
    if r["unit"] == "exact":
        return "exact"
    if t["on"] == "ratio":
        return f"ratio {op} {t['value']:g}"
    return f"{op} {t['value']:g} {r['unit']}"


def markdown(report: dict) -> str:
    lines = [f"charrnn benchmarks — {report['machine']}, {report['date']}, mode {report['mode']}",
             "",
             f"torch {report['torch']}, device {report['device']}"
             f"{' (' + report['device_name'] + ')' if report.get('device_name') else ''}, "
             f"{report['threads']} thread(s) of {report['cores']} core(s), "
             f"precision {report['precision']}, mkldnn default "
             f"{'on' if report['mkldnn_default'] else 'off'}; medians of alternating repeats",
             "",
             "| benchmark | charrnn | reference | ratio | target | met | spread |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        ref = "—"
        if r["reference"] is not None:
            ref = f"{_fmt(r['reference'], r['unit'])} ({r['reference_name']})"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        spread = "—" if r.get("spread") is None else f"{100 * r['spread']:.0f}%"
        # a row's `detail` (a short text) is shown beside its name; a `note` only in the JSON
        name = r["name"] + (f" ({r['detail']})" if r.get("detail") else "")
        lines.append(f"| {name} | {_fmt(r['value'], r['unit'])} | {ref} | {ratio} | "
                     f"{_target_text(r)} | {met} | {spread} |")
    lines += ["", "spread: (max / min - 1) of the repeats of the noisier side; load average "
              f"{report['loadavg_start']} at the start, {report['loadavg_end']} at the end"
              f"{_busy_note(report)}; total {report['duration_s']:.0f} s"]
    return "\n".join(lines)


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _busy_note(report: dict) -> str:
    loads = [x for x in (report["loadavg_start"], report["loadavg_end"]) if x is not None]
    if loads and max(loads) > 0.5 + report["threads"] * 0.5 and report["device"] == "cpu":
        return (" (**other work was running on these cores: the figures are unreliable**; "
                "benchmark on an idle machine)")
    return ""


def machine_slug(device) -> str:
    import torch
    from charrnn.device import available_cores

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cuda"
    return f"{device.type}{available_cores()}"


def write_json(report: dict, out: Path) -> None:
    from charrnn.fsutil import write_text_atomic
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
