"""A sweep folder read as a table of finished runs, and the runs that are not in it (skipped,
failed, unfinished); the labels of its rows and regimes."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

REGIME_ORDER = {"zero": 0, "one": 1, "few": 2, "full": 3}
GROUP = ["task", "backbone", "prompt", "row", "family", "init_from", "method_label", "regime", "k"]  # one cell
# "family": the row label without its prompt, the same method across the prompts of a sweep


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Finished runs as rows, and the runs that were skipped, failed or never finished."""
    sweep_dir = Path(sweep_dir)
    rows, others = [], []
    for job in sorted(p for p in sweep_dir.rglob(".hydra") if p.is_dir()):
        run_dir = job.parent
        name = str(run_dir.relative_to(sweep_dir))
        metrics = run_dir / "metrics.json"
        if not metrics.exists():
            others.append({"run": name, "status": "missing", "reason": "no metrics.json (killed or still running)"})
            continue
        m = json.loads(metrics.read_text())
        if m.get("status") != "ok":
            others.append({"run": name, "status": m.get("status"), "reason": m.get("reason") or m.get("error")})
            continue
        rows.append({**m, "method_label": m.get("method_label") or m["method"], "init_from": m.get("init_from") or "",
                     "overrides": m.get("overrides") or {}, "run": name, "run_dir": str(run_dir)})
    runs = pd.DataFrame(rows)
    if runs.empty:
        return runs, others
    # absent or null in older runs
    for col in ("dev_acc", "dev_acc_start", "dev_logprob", "dev_logprob_start", "num_dev", "label_budget"):
        runs[col] = pd.to_numeric(runs[col]) if col in runs else math.nan
    runs["label_budget"] = runs["label_budget"].fillna(runs["num_train"] + runs["num_dev"])
    runs["k"] = runs["k"].astype("Int64")
    runs["prompt"] = runs["prompt"].fillna("default") if "prompt" in runs else "default"  # older runs: the task's own
    runs["family"] = _labels(runs, with_prompt=False)
    runs["row"] = _labels(runs)
    return runs, others


def correctness(run_dir: str, split: str) -> tuple[list[str], np.ndarray] | None:
    """Ids and 0/1 correctness of one split's rows of a run's predictions.jsonl ("test", "heldout",
    "eval:<task>"), in the file's order; None without the file or without rows of that split."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.exists():
        return None
    return _parse_predictions(path.read_bytes()).get(split)


@functools.lru_cache(maxsize=256)
def _parse_predictions(text: bytes) -> dict[str, tuple[list[str], np.ndarray]]:
    """Every split of one predictions file, parsed once per content (the report reads the test,
    held-out and eval rows of the same runs; a rewritten file is parsed again)."""
    ids: dict[str, list[str]] = {}
    right: dict[str, list[bool]] = {}
    for r in map(json.loads, text.splitlines()):
        ids.setdefault(r["split"], []).append(str(r["id"]))
        right.setdefault(r["split"], []).append(r["prediction"] == r["label"])
    return {split: (ids[split], np.array(right[split], dtype=float)) for split in ids}


def _labels(runs: pd.DataFrame, with_prompt: bool = True) -> pd.Series:
    """A row label: the method label, plus the backbone, task or prompt when a sweep compares
    several, plus the run it started from (head swap) when there is one."""
    label = runs["method_label"].astype(str)
    for col in ("backbone", "task"):
        if runs[col].nunique() > 1:
            label = label + " · " + runs[col].astype(str)
    if with_prompt and runs["prompt"].nunique() > 1:
        label = label + " · prompt " + runs["prompt"].astype(str)
    return label + runs["init_from"].map(lambda p: f" ← {Path(p).name}" if p else "")


def regime_label(regime: str, k) -> str:
    return {"zero": "zero", "one": "one (k=1)", "full": "full"}.get(regime, f"few (k={k})")


def regime_order(regime: str, k) -> tuple:
    return REGIME_ORDER[regime], -1 if pd.isna(k) else k


def cell_key(key: tuple) -> dict:
    """GROUP's values of a groupby key, k as int or None (full data) so plain == works on it."""
    cell = dict(zip(GROUP, key))
    return {**cell, "k": None if pd.isna(cell["k"]) else int(cell["k"])}
