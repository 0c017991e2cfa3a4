"""Weights & Biases around the runs: never a reason for a run or a sweep to fail."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def ensure_wandb_mode() -> str:
    """Log offline when no API key is set, and say how to upload later; return the mode."""
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled"):
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:  # `wandb login` stores the key in ~/.netrc; reading it needs no network
        logged_in = bool(netrc.netrc().authenticators("api.wandb.ai"))
    except (FileNotFoundError, netrc.NetrcParseError):
        logged_in = False
    if logged_in:
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    print("shotlab: no W&B API key, logging offline; upload later with `wandb sync <run folder>/wandb/offline-run-*`")
    return "offline"


def log_report(logger_cfg: dict, sweep_dir: Path, report: dict) -> None:
    """A summary run in the sweep's W&B group holding the report's table and plot."""
    import wandb

    ensure_wandb_mode()
    run = wandb.init(
        project=logger_cfg.get("project", "shotlab"), group=logger_cfg.get("group"), job_type="report",
        name=f"report-{sweep_dir.name}", dir=str(sweep_dir), reinit="finish_previous",
    )
    run.log({"report/table": wandb.Table(dataframe=report["table"]), "report/plot": wandb.Image(str(report["png"]))})
    run.finish()
