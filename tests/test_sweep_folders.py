"""A plain `-m` sweep (no experiment, no hydra.sweep.dir) over a user's CSV given by absolute
paths ends with its report, its run folders sit directly in the sweep folder, and its jobs do
not repeat Lightning's start-up notes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest


def write_csv(path, n: int, seed: int):
    rng = random.Random(seed)
    rows = ["text,label"]
    for i in range(n):
        label = ["bad", "good"][i % 2]
        rows.append(f"{' '.join(rng.choices(['the', 'film', 'was', 'a', 'plot'], k=4))} {label},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_plain_sweep_over_absolute_csv_paths_has_flat_run_folders_and_a_report(tmp_path):
    data = tmp_path / "data" / "nested"
    data.mkdir(parents=True)
    train, test = write_csv(data / "train.csv", 120, 0), write_csv(data / "test.csv", 40, 1)
    overrides = ["backbone=tiny-gpt2", "logger=none", "task.test_size=48", "max_length=24", "epochs=1", "validations=1",
                 "regime.min_steps=2", "trainer.enable_progress_bar=false", "task=csv",
                 f"task.files.train={train}", f"task.files.test={test}", "method=linear_probe", "regime.k=2", "seed=0,1"]
    work = tmp_path / "work"  # the sweep lands in <cwd>/outputs/sweeps/<sweep_name>
    work.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "shotlab.train", "-m", *overrides], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    sweeps = list((work / "outputs" / "sweeps").iterdir())
    assert len(sweeps) == 1
    sweep = sweeps[0]
    for name in ("report.md", "report.csv", "report.png"):
        assert (sweep / name).stat().st_size > 0, name
    runs = list(sweep.rglob("metrics.json"))
    assert len(runs) == 2 and all(p.parent.parent == sweep for p in runs)  # flat: one level, one folder a run
    names = sorted(p.parent.name for p in runs)
    assert names[0] != names[1] and all("task.files.train=train.csv" in n and "seed=" in n for n in names)
    assert {json.loads(p.read_text())["status"] for p in runs} == {"ok"}
    assert not list((tmp_path / "data").rglob("metrics.json"))  # nothing was written next to the data

    # Lightning's start-up notes, printed on every job, are quieted; the report is printed.
    output = done.stdout + done.stderr
    for noise in ("GPU available", "TPU available", "litlogger", "`srun` command", "LeafSpec"):
        assert noise not in output, noise
    assert "| linear_probe |" in output
