"""A SLURM job that hits its time limit or is preempted resumes to the result it would have had.

hydra/launcher=slurm runs each job under submitit, which asks SLURM for USR2 `signal_delay_s`
before the limit (and gets it on preemption); submitit's handler re-submits the same Hydra job
(same overrides, same run folder) and counts time-outs against `max_num_timeout`. `ResumeOnSlurm`
holds that signal until the current epoch ends, saves `hpc_ckpt_<n>.ckpt` (weights, optimizer,
loop state, batch order, RNG states), then calls submitit's handler. The requeued run passes the
newest file to `trainer.fit(ckpt_path=...)`.

Why not Lightning's auto-requeue (SLURMEnvironment(auto_requeue=True)): it saves the moment the
signal arrives, mid-epoch, where Lightning cannot go on with the same batches (it warns; the
epoch restarts in another order), and it runs `scontrol requeue` itself, next to submitit's
handler, which requeues too and owns the time-out count and the job's result file.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint


def hpc_checkpoints(run_dir: Path) -> list[Path]:
    """The requeue checkpoints in a run folder, oldest first (Lightning's hpc_ckpt_<n> naming)."""
    return sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


class ResumeOnSlurm(Checkpoint):  # listed after BestWeights, it runs after it: a new best score is saved too
    """Save and hand over to submitit at the epoch end after its signal; on resume, put back the
    global RNG (dropout's) as it was at the save, right before the first resumed batch."""

    def __init__(self) -> None:
        self.signalled = False
        self._submitit = None  # (signal, submitit's handler) while training under submitit
        self._saved = None  # this epoch's requeue checkpoint, once written
        self._rng = None  # RNG states of the checkpoint this run resumes from

    def on_train_start(self, trainer, pl_module) -> None:
        sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
        if callable(signal.getsignal(sig)):  # only a submitit job has a handler that requeues
            self._submitit = (sig, signal.getsignal(sig))
            signal.signal(sig, lambda *_: setattr(self, "signalled", True))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Here, not at load time: in between Lightning rebuilds loaders and loops, and the
        # uninterrupted run validated and ended its epoch.
        if self._rng is not None:
            torch.set_rng_state(self._rng["torch"])
            random.setstate(self._rng["python"])
            if self._rng["cuda"]:
                torch.cuda.set_rng_state_all(self._rng["cuda"])
            self._rng = None

    # Lightning resumes exactly from a checkpoint written at an epoch's last batch, or after the
    # validation that follows it; from mid-epoch it replays the epoch, from on_train_epoch_end it
    # miscounts the next epoch's batches. So: save at the last batch, save again if validation
    # follows, hand over at the epoch end. Every rank joins the decision and save_checkpoint.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not (self._submitit and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            return
        if trainer.strategy.reduce_boolean_decision(self.signalled, all=False):
            out = Path(trainer.default_root_dir)
            self._saved = out / f"hpc_ckpt_{len(hpc_checkpoints(out)) + 1}.ckpt"
            trainer.save_checkpoint(self._saved)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._saved:
            trainer.save_checkpoint(self._saved)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._saved:
            sig, requeue = self._submitit
            requeue(sig, None)  # submitit re-submits this job and exits

    def on_train_end(self, trainer, pl_module) -> None:
        self._give_back()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._give_back()

    def _give_back(self) -> None:
        if self._submitit:
            signal.signal(*self._submitit)
            self._submitit = None

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": cuda}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._rng = state_dict["rng"]
