"""A write that fails for real (a file-size limit on the run's process, as a full disk would)
ends the run in one line naming the file, leaves no part of it where a later run or the report
would read it, keeps what was there before, and shows in a sweep's report as a failed run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["backbone=tiny-gpt2", "logger=none", "max_length=24", "trainer.enable_progress_bar=false", "epochs=1",
        "validations=1", "regime.min_steps=2"]
pytestmark = pytest.mark.slow


def limited(max_bytes: int):
    """preexec_fn: no file of this process (or its children) may grow past max_bytes. Python
    ignores SIGXFSZ, so the write that would pass the limit fails with EFBIG."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def train(tmp_path: Path, *overrides: str, max_bytes: int | None = None, multirun: bool = False):
    where = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    cmd = [sys.executable, "-m", "shotlab.train", *(["-m"] if multirun else []), *TINY, f"{where}={tmp_path / 'run'}",
           *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=600, preexec_fn=limited(max_bytes) if max_bytes else None)


def parts(*folders: Path) -> list[Path]:
    """Left-over pieces of files (ours are .part, a plain rename-into-place would leave .tmp)."""
    return [p for f in folders for p in (*f.rglob("*.part"), *f.rglob("*.tmp"))]


# Each case: a run whose named file passes a limit that every file before it stays under.
CASES = {
    # finetune's best weights (the tiny GPT-2, ~6.5 MB) under a 1 MB limit
    "checkpoint": (["method=finetune", "regime.k=2", "task.test_size=48"], 1_000_000, r"checkpoints/best.ckpt"),
    # the test split's features (1,056 sentences x 32 floats + keys, ~150 kB) under 64 kB
    "feature shard": (["method=linear_probe", "regime.k=2", "task.test_size=null"], 64_000, ".safetensors"),
    # zero-shot predictions of the whole test split (~100 kB) under 64 kB
    "predictions": (["method=prompt", "regime=zero", "task.test_size=null"], 64_000, "predictions.jsonl"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_no_part(tmp_path, case):
    overrides, limit, name = CASES[case]
    features = Path(os.environ["SHOTLAB_FEATURES"])
    done = train(tmp_path, *overrides, "+force=true", max_bytes=limit)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert lines[-1].startswith("shotlab: error: cannot write ") and name in lines[-1], lines[-1]
    assert "(File too large)" in lines[-1] and "Traceback" not in done.stderr
    failed = Path(lines[-1].removeprefix("shotlab: error: cannot write ").split(" (")[0])
    assert not failed.exists() and not parts(tmp_path, features)
    assert not (tmp_path / "run" / "metrics.json").exists()  # no result stands for a run that did not finish


def test_a_failed_rewrite_keeps_the_files_that_were_there(tmp_path):
    overrides, limit, _ = CASES["predictions"]
    assert train(tmp_path, *overrides).returncode == 0
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("metrics.json", "predictions.jsonl")}
    done = train(tmp_path, *overrides, "+force=true", max_bytes=limit)
    assert done.returncode == 2 and "predictions.jsonl" in done.stderr
    assert {name: (tmp_path / "run" / name).read_bytes() for name in before} == before
    assert not parts(tmp_path)


def test_a_sweep_reports_the_run_whose_write_failed(tmp_path):
    # 1 MB: the linear probe's files (its head, 48 test features) fit, finetune's best weights do not;
    # the report's own files (report.png ~ 50 kB) fit too.
    done = train(tmp_path, "method=linear_probe,finetune", "regime.k=2", "task.test_size=48", max_bytes=1_000_000,
                 multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "run").glob("*/metrics.json")}
    status = {name.split("method=")[1].split(",")[0]: m["status"] for name, m in runs.items()}
    assert status == {"linear_probe": "ok", "finetune": "failed"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.count(": failed — ") == 1 and "cannot write" in report and "best.ckpt" in report
    assert "| linear_probe |" in report
    assert not parts(tmp_path)
