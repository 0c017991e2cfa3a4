"""scripts/device_check.py, the GPU machine's one command, runs on the CPU too (--cpu, smaller),
so it cannot rot between the times a GPU is lent: every check it prints passes here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_on_the_cpu_passes_every_check(tmp_path):
    out = tmp_path / "device_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_check.py"), "--cpu", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = {r["check"].split(" ")[0]: r for r in report["rows"]}
    assert sorted(checks) == ["(a)", "(b)", "(c)"]
    rows = report["rows"]
    scoring = [r for r in rows if r["check"].startswith("(a)")]
    assert len(scoring) == 2 and all(r["max_score_diff"] > 0 for r in scoring)  # bf16 really ran
    assert all(r["max_score_diff"] <= r["tolerance"] for r in scoring)
    runs = [r for r in rows if r["check"].startswith("(b)")]
    assert [r["check"].split()[2] for r in runs] == ["prompt_finetune", "finetune"]
    assert all(r["ok"] and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in runs)
    assert "| check | ok |" in done.stdout and "NO" not in done.stdout
