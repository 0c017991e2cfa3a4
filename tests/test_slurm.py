"""Sweeps through hydra/launcher=slurm on a real single-node SLURM (scripts/slurm_local.sh):
the numbers match a local sweep, a time limit requeues and resumes, failures surface."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "experiment=compare_regimes", "backbone=tiny-gpt2", "logger=none", "task.test_size=64",
         "max_length=32", "regime.k=2", "method=linear_probe", "seed=0,1", "trainer.enable_progress_bar=false"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.setup=[]"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="session")
def slurm_env():
    """Start the local cluster (stop it afterwards only if this fixture started it)."""
    script = ROOT / "scripts" / "slurm_local.sh"
    if os.geteuid() != 0 and not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed and installing it needs root")
    if not shutil.which("apt-get") and not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed and apt-get is unavailable")
    was_up = subprocess.run([script, "status"], capture_output=True).returncode == 0
    start = subprocess.run([script, "start"], capture_output=True, text=True, timeout=900)
    if start.returncode != 0:
        pytest.skip(f"could not start the local SLURM cluster: {start.stderr.strip().splitlines()[-1:]}")
    conf = start.stdout.strip().split("=", 1)[1]
    yield {**os.environ, "SLURM_CONF": conf, "OMP_NUM_THREADS": "1"}
    if not was_up:
        subprocess.run([script, "stop"], capture_output=True, timeout=300)


def sweep(env, sweep_dir, *overrides, timeout=600):
    """Run `python -m shotlab.train -m ...` as a user would; a hang fails the test."""
    cmd = [sys.executable, "-m", "shotlab.train", *SWEEP, f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_sweep_through_slurm_matches_the_local_sweep(slurm_env, tmp_path):
    local = sweep(slurm_env, tmp_path / "local")
    slurm = sweep(slurm_env, tmp_path / "slurm", *SLURM)
    assert local.returncode == 0, local.stderr[-2000:]
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert len(list((tmp_path / "slurm" / ".submitit").glob("*/*_result.pkl"))) == 2  # ran as SLURM jobs
    a, b = (pd.read_csv(tmp_path / d / "report.csv") for d in ("local", "slurm"))
    assert len(a) == 1 and a.n.iloc[0] == 2
    pd.testing.assert_frame_equal(a, b)


# A run cut by its time limit or by preemption: training holds after its first batch until the
# signal has reached shotlab's handler (tests/hooks.py), so it cannot end first on a fast machine,
# and the hold costs a slow one nothing. 40 steps leave 39 to resume.
RUN = ["seed=0", "method=finetune", "regime.k=8", "regime.min_steps=40"]


@pytest.fixture(scope="module")
def uninterrupted(slurm_env, tmp_path_factory):
    """The reference: the same run, locally, never signalled."""
    ref = tmp_path_factory.mktemp("ref")
    done = sweep(slurm_env, ref, *RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    return ref


def held_sweep(env, sweep_dir, flag, *overrides):
    """Start the SLURM sweep of RUN whose training holds until its signal comes (Popen: it waits for its job)."""
    hold = ["+callbacks.hold._target_=tests.hooks.HoldUntilSignalled", f"+callbacks.hold.flag={flag}"]
    cmd = [sys.executable, "-m", "shotlab.train", *SWEEP, f"hydra.sweep.dir={sweep_dir}", *SLURM, *RUN, *hold, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(what: str, done, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Poll `done()` until it is true; fail with `what` if the sweep ends or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def final_states(env, job: str, timeout: float = 120) -> list[str]:
    """The job's states in order (one per requeue) once the last one is final, from sacct, which
    learns of a job's end a few seconds after it; fail with a message if it does not."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        states = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", job, "-o", "State"], env=env,
                                capture_output=True, text=True).stdout.split()
        if states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED"):
            return states
        time.sleep(2)
    pytest.fail(f"sacct gave no final state for job {job} within {timeout} s (last seen: {states or 'nothing'})")


def check_resumed_to_the_uninterrupted_result(env, cut: Path, ref: Path, proc: subprocess.Popen, case: str):
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    job = next(p.name for p in (cut / ".submitit").iterdir() if p.is_dir())
    # Not states[-1] == "COMPLETED": a last job that ends as its own USR2 comes dies of it at
    # interpreter exit (seen once: FAILED 0:12 after "Job completed successfully"); the sweep's
    # exit code 0 says its result was written.
    states = final_states(env, job)
    assert states[0] == "REQUEUED", states
    log = "".join(p.read_text() for p in (cut / ".submitit").glob("*/*_log.err"))
    assert f"this job is {case}" in log  # submitit's handler ran (after the epoch-end save)
    assert "shotlab: resuming from" in log and "hpc_ckpt_1.ckpt" in log  # resumed
    run_dir = next(cut.glob("*/metrics.json")).parent
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))
    a, b = (pd.read_csv(d / "report.csv") for d in (ref, cut))
    pd.testing.assert_frame_equal(a, b)
    # the run itself, not only the report's summary
    ref_metrics, cut_metrics = (json.loads(next(d.glob("*/metrics.json")).read_text()) for d in (ref, cut))
    assert [ref_metrics[k] for k in ("test_acc", "test_f1", "confusion", "train_steps")] == [
        cut_metrics[k] for k in ("test_acc", "test_f1", "confusion", "train_steps")]


def test_time_limit_requeues_and_resumes_to_the_uninterrupted_result(slurm_env, uninterrupted, tmp_path):
    # The real time limit: SLURM sends USR2 at the first of its 30 s checks that finds under
    # signal_delay_s + 30 s left, i.e. 30-60 s into a 2-min job (with 1 min and 45 s it came 6 s
    # in, before Python had a handler, and killed the job). The held run saves at its epoch end,
    # submitit requeues it (~50 s later here), it resumes, and may be cut again: max_num_timeout=6.
    cut = tmp_path / "cut"
    proc = held_sweep(slurm_env, cut, tmp_path / "held", "hydra.launcher.timeout_min=2",
                      "hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=6")
    check_resumed_to_the_uninterrupted_result(slurm_env, cut, uninterrupted, proc, "timed-out")


def test_preemption_requeues_and_resumes_to_the_uninterrupted_result(slurm_env, uninterrupted, tmp_path):
    # Preemption: USR2 from `scancel --signal` as soon as training holds; far from its time limit,
    # submitit requeues the job without counting a time-out.
    cut, held = tmp_path / "cut", tmp_path / "held"
    proc = held_sweep(slurm_env, cut, held)
    wait_until("training started", held.exists, proc)
    job = next(p.name for p in (cut / ".submitit").iterdir() if p.is_dir())
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, check=True)
    check_resumed_to_the_uninterrupted_result(slurm_env, cut, uninterrupted, proc, "preempted")


def test_a_failing_run_is_reported_with_its_error(slurm_env, tmp_path):
    bad = sweep(slurm_env, tmp_path, *SLURM, "task=csv", "task.files.train=/nonexistent.csv")
    report = (tmp_path / "report.md").read_text()
    assert bad.returncode == 0  # one bad run does not stop a sweep; the report says what failed
    assert report.count(": failed — ") == 2 and "nonexistent.csv" in report
    assert "failed" in bad.stdout + bad.stderr


def test_a_killed_job_fails_the_sweep_instead_of_hanging(slurm_env, tmp_path):
    # The job kills itself before Python starts its run: no result file, state FAILED.
    killed = sweep(slurm_env, tmp_path, *SLURM, "seed=0", "hydra.launcher.setup=['kill -9 $$']", timeout=300)
    assert killed.returncode != 0
    assert "UncompletedJobError" in killed.stderr or "has not produced any output" in killed.stderr
