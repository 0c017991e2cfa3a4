"""Real multiruns on the tiny GPT-2: the report matches the runs, re-runs resume, W&B logs
every job offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from shotlab.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    "backbone=tiny-gpt2", "logger=none", "task.test_size=48", "max_length=24", "epochs=1", "validations=1",
    "regime.min_steps=4", "trainer.enable_progress_bar=false",
]


def multirun(sweep_dir: Path, *overrides: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shotlab.train", "-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def metrics(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


GRID = ["regime.k=0,2", "method=linear_probe,finetune", "seed=0,1"]


@pytest.mark.slow
def test_sweep_report_matches_runs_and_rerun_runs_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    out = finish(multirun(sweep, *GRID))
    runs = metrics(sweep)
    assert len(runs) == 8
    skipped = [m for m in runs.values() if m["status"] == "skipped"]
    assert len(skipped) == 4 and all("k=0 gives it nothing to train on" in m["reason"] for m in skipped)
    assert "finetune trains, and k=0 gives it nothing to train on" in out  # listed, not averaged away

    table = pd.read_csv(sweep / "report.csv")
    for method in ("linear_probe", "finetune"):
        accs = [m["test_acc"] for m in runs.values() if m.get("method") == method and m["status"] == "ok"]
        row = table[(table.method == method) & (table.k == 2)].iloc[0]
        assert row.n == 2
        assert row.acc_mean == pytest.approx(sum(accs) / 2)
        assert row.acc_std == pytest.approx(pd.Series(accs).std())
    assert (sweep / "report.png").stat().st_size > 10_000
    assert "| linear_probe |" in (sweep / "report.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    again = finish(multirun(sweep, *GRID))
    redone = [p.parent.name for p in stamps if p.stat().st_mtime_ns != stamps[p]]
    assert not redone, f"re-ran {redone}:\n{again[-3000:]}"  # nothing re-ran


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_report(tmp_path):
    grid = ["regime.k=2", "method=linear_probe", "seed=0,1,2"]
    whole = tmp_path / "whole"
    finish(multirun(whole, *grid))

    # The sweep holds as its second job starts (tests/hooks.py), and is killed there, as a cluster's
    # time limit or a Ctrl-C would: one run is done, two are not.
    cut, held = tmp_path / "cut", tmp_path / "held"
    hold = ["+hydra.callbacks.hold._target_=tests.hooks.HoldJob", f"+hydra.callbacks.hold.flag={held}"]
    proc = multirun(cut, *grid, *hold, start_new_session=True)
    try:
        ended = wait_for(held, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    assert not ended, f"the sweep {ended} before its second job started:\n{out[-3000:]}"
    done_before = {k: cut / k / "metrics.json" for k, m in metrics(cut).items() if m.get("status") == "ok"}
    assert len(done_before) == 1
    stamps = {k: p.stat().st_mtime_ns for k, p in done_before.items()}
    finish(multirun(cut, *grid))
    assert {k: p.stat().st_mtime_ns for k, p in done_before.items()} == stamps  # the finished run is not redone

    a, b = write_report(whole, echo=False)["table"], write_report(cut, echo=False)["table"]
    pd.testing.assert_frame_equal(a, b)
    assert int(b.n.iloc[0]) == 3


def wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 600) -> str | None:
    """Wait until `flag` exists (None) or `proc` ends first (its exit code, as a reason); fail
    with a message if neither happens in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        if time.monotonic() > deadline:
            pytest.fail(f"{flag.name} did not appear within {timeout} s")
        time.sleep(0.05)
    return None


def wandb_records(run_dir: Path) -> tuple[dict, dict, dict]:
    """Config, summary and run record (group, job type) of an offline W&B run, as wandb's own
    `wandb leet inspect` prints them from its .wandb log, so the test needs no server."""
    wandb = [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json"]
    state = json.loads(subprocess.run([*wandb, "--summary", str(run_dir)], capture_output=True, text=True, check=True).stdout)
    records = subprocess.run([*wandb, str(run_dir)], capture_output=True, text=True, check=True).stdout
    run = next(r["run"] for r in map(json.loads, records.splitlines()) if r.get("type") == "run")
    return state["config"], state["summary"], run


@pytest.mark.slow
def test_wandb_offline_logs_every_job_of_a_sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    finish(multirun(sweep, "logger=wandb", "sweep_name=wandb-test", "regime.k=2", "method=linear_probe", "seed=0,1",
                    "eval_tasks=[product_sentiment]"))
    found, out_of_domain = {}, {}
    for run_dir in sweep.glob("*/wandb/offline-run-*"):
        config, summary, run = wandb_records(run_dir)
        assert run["run_group"] == "wandb-test" and run["job_type"] == "linear_probe"
        assert (config["method"], config["regime"], config["k"]) == ("linear_probe", "few", 2)
        found[config["seed"]] = summary["final/test_acc"]
        out_of_domain[config["seed"]] = summary["final/eval/product_sentiment/test_acc"]
    runs = {m["seed"]: m["test_acc"] for m in metrics(sweep).values()}
    assert found == pytest.approx(runs) and set(found) == {0, 1}
    scored = {m["seed"]: m["eval"]["product_sentiment"]["test_acc"] for m in metrics(sweep).values()}
    assert out_of_domain == pytest.approx(scored)
    reports = list(sweep.glob("wandb/offline-run-*"))
    logged = wandb_records(reports[0])[1]
    assert reports and logged["report/table"]["_type"] == "table-file" and logged["report/plot"]["_type"] == "image-file"
