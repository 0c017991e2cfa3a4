"""Callbacks that let a test put a run or a sweep in the state it checks, whatever the machine's
speed: they hold at a chosen point and say so in a flag file, so the test acts on an event, not
on a guess of how long the work takes. Tests load them by config (`+callbacks.*`, for the
Trainer; `+hydra.callbacks.*`, for the sweep), in the job's own process."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback


class HoldUntilSignalled(Callback):
    """After the first training batch, once per flag file: write `flag`, then hold until the job's
    requeue signal has reached shotlab's handler (ResumeOnSlurm.signalled), so that training cannot
    end before the signal comes. The flag survives the requeue, so the resumed run does not hold."""

    def __init__(self, flag: str, timeout_s: float = 600):
        self.flag, self.timeout_s = Path(flag), timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from shotlab.requeue import ResumeOnSlurm

        if self.flag.exists():
            return
        resume = next(c for c in trainer.callbacks if isinstance(c, ResumeOnSlurm))
        self.flag.write_text(f"held after step {trainer.global_step}\n")
        deadline = time.monotonic() + self.timeout_s
        while not resume.signalled:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no requeue signal reached the run within {self.timeout_s} s")
            time.sleep(0.05)


class HoldJob(HydraCallback):
    """In a sweep run by one process: write `flag` as job number `job` (0-based) starts, then hold
    there until the process is killed (or `timeout_s` passes: then the job fails)."""

    def __init__(self, flag: str, job: int = 1, timeout_s: float = 600):
        self.flag, self.job, self.timeout_s = Path(flag), job, timeout_s
        self.started = 0

    def on_job_start(self, config, **kwargs) -> None:
        self.started += 1
        if self.started - 1 != self.job:
            return
        self.flag.write_text(f"holding job {self.job}\n")
        time.sleep(self.timeout_s)
        raise RuntimeError(f"job {self.job} was held {self.timeout_s} s and nobody stopped the sweep")
