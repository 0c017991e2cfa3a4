"""What a run records besides its scores: its own peak memory, and the experiment logger
(Weights & Biases is never a reason for a run or a sweep to fail)."""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import resource
import sys
import time
import warnings
from pathlib import Path


def reset_peak_memory() -> None:
    """Start this process's peak-RSS count afresh (Linux), so each run of a multirun reports its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    """Peak resident memory since the last reset (Linux VmHWM), else since the process started."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype=None) -> float:
    """Best GFLOP/s of an n x n matmul (fp32 unless `dtype`) on this process's threads or on a
    GPU (`device="cuda"`): the yardstick the benchmarks give their % of (measure it in the same
    process, near the work it measures)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)

    def sync():
        if a.is_cuda:
            torch.cuda.synchronize()

    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def quiet_lightning() -> None:
    """Lightning's notes on every job of a sweep (GPU/TPU available, the litlogger tip, the srun hint)
    and torch's LeafSpec deprecation raised inside Lightning tell a user nothing to act on.
    Progress bars, other warnings and errors stay."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.distributed", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A k-shot sample is one or two batches: fewer than log_every_n_steps, by design.
    for message in ("The `srun` command is available", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                    r"The number of training batches \(\d+\) is smaller than the logging interval"):
        warnings.filterwarnings("ignore", message=message)


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


def make_logger(logger_cfg):
    """The run's Lightning logger from the `logger` config group, or False for logger=none."""
    if not logger_cfg:
        return False
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import WandbLogger

    logger = instantiate(logger_cfg)
    if isinstance(logger, WandbLogger):  # its run starts on first use, after the mode is set
        ensure_wandb_mode()
    return logger


def finish_logger(logger, record: dict, result: dict, predictions: list[dict]) -> None:
    """Log the run's identity (its overrides: the candidate's hyper-parameters), final numbers
    (dev and test accuracy among them) and, to W&B, its predictions table; then close it (a
    sweep logs every job)."""
    if not logger:
        return
    from lightning.pytorch.loggers import WandbLogger

    logger.log_hyperparams(record)
    numbers = {f"final/{k}": v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for task, scored in (result.get("eval") or {}).items():  # out of domain: final/eval/<task>/test_acc, ...
        numbers.update({f"final/eval/{task}/{k}": v for k, v in scored.items() if isinstance(v, (int, float))})
    logger.log_metrics(numbers)
    if isinstance(logger, WandbLogger):
        columns = ["split", "id", "label", "prediction", "scores"]
        logger.log_table("predictions", columns=columns, data=[[r[c] for c in columns] for r in predictions])
        logger.experiment.summary.update({**record, **numbers})
        logger.experiment.finish()
    else:
        logger.finalize("success")


def log_report(logger_cfg: dict, sweep_dir: Path, report: dict) -> None:
    """A summary run in the sweep's W&B group holding what report.md shows: the table of selected
    runs with CIs, the recipe rows beside it, the selection regret, the paired comparisons, the
    selection summary and the plot; the out-of-domain and across-prompt tables where the sweep has them."""
    import wandb

    def table(frame):  # W&B takes None for an empty cell, not pandas' NA (full data has no k) or NaN
        return wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))

    ensure_wandb_mode()
    run = wandb.init(
        project=logger_cfg.get("project", "shotlab"), group=logger_cfg.get("group"), job_type="report",
        name=f"report-{sweep_dir.name}", dir=str(sweep_dir), reinit="finish_previous",
    )
    rows = report["table"]
    selected, recipe = rows[rows.kind == "selected"], rows[rows.kind != "selected"]
    regret = selected[selected.selected != ""][["method", "regime", "k", "regret", "regret_low", "regret_high",
                                                "heldout_n", "n"]]
    run.log({"report/table": table(selected), "report/recipe": table(recipe), "report/regret": table(regret),
             "report/comparisons": table(report["comparisons"]),
             "report/selection": table(report["selection"]), "report/plot": wandb.Image(str(report["png"])),
             **({"report/ood": table(report["ood"]), "report/ood_comparisons": table(report["ood_comparisons"])}
                if report.get("ood") is not None else {}),
             **({"report/prompts": table(report["prompts"]),
                 "report/prompt_comparisons": table(report["prompt_comparisons"])}
                if report.get("prompts") is not None else {})})
    run.finish()

