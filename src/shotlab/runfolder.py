"""A run's folder: created with a one-line error, its files written whole and by one process.

Under DDP every process does the whole run and gets the same results (methods/transfer.py
gathers them); the process of global rank 0 writes the files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from shotlab import ShotlabError
from shotlab.files import write_text

# Where the launchers put a process's rank: torchrun (RANK), the processes Lightning starts itself
# (LOCAL_RANK; NODE_RANK on further nodes), SLURM tasks (SLURM_PROCID), LSF (JSM_NAMESPACE_RANK).
# Lightning reads the same (lightning.fabric.utilities.rank_zero), but importing it takes seconds.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def writes() -> bool:
    """Whether this process writes the run's files (global rank 0)."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def write_json(path: Path, data: dict) -> None:
    """Replace `path` whole (a reader never sees half a file); only the writing process does."""
    if writes():
        write_text(path, json.dumps(data, indent=2))


def make_folder(path: Path, key: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. a path under an existing file
        raise ShotlabError(f"cannot create the folder {path} ({err.strerror}); set {key} to a folder you can write") from None
    return path


def fail(err: ShotlabError) -> NoReturn:
    """End the command with the one-line message of a mistake the user can fix (no traceback)."""
    print(f"shotlab: error: {err}", file=sys.stderr)
    sys.exit(2)


class CheckRunFolder(Callback):
    """Hydra callback (conf/train.yaml): a run or sweep folder that cannot be created fails in one
    line here, before Hydra's own mkdir would fail with a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            make_folder(Path(config.hydra.run.dir), "hydra.run.dir")
        except ShotlabError as err:
            fail(err)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            make_folder(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        except ShotlabError as err:
            fail(err)
