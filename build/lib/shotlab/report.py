"""Sweep report: every run's metrics.json -> mean ± std table (markdown, CSV) and a
learning-curve plot (accuracy against k). Runs at multirun end and on demand:

    python -m shotlab.report outputs/sweeps/<sweep>
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

REGIME_ORDER = {"zero": 0, "one": 1, "few": 2, "full": 3}


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Finished runs as rows, and the runs that were skipped, failed or never finished."""
    rows, others = [], []
    for job in sorted(p for p in Path(sweep_dir).rglob(".hydra") if p.is_dir()):
        run_dir = job.parent
        metrics = run_dir / "metrics.json"
        if not metrics.exists():
            others.append({"run": run_dir.name, "status": "missing", "reason": "no metrics.json (killed or still running)"})
            continue
        m = json.loads(metrics.read_text())
        if m.get("status") == "ok":
            rows.append({**m, "run": run_dir.name})
        else:
            others.append({"run": run_dir.name, "status": m.get("status"), "reason": m.get("reason") or m.get("error")})
    return pd.DataFrame(rows), others


def _regime_label(regime: str, k) -> str:
    return {"zero": "zero", "one": "one (k=1)", "full": "full"}.get(regime, f"few (k={k})")


def _labels(runs: pd.DataFrame) -> pd.Series:
    """A row label: the method, plus the backbone when a sweep compares several, plus the
    run it started from (head swap) when there is one."""
    label = runs["method"].astype(str)
    if runs["backbone"].nunique() > 1:
        label = label + " · " + runs["backbone"].astype(str)
    if "init_from" in runs:
        source = runs["init_from"].map(lambda p: f" ← {Path(p).name}" if isinstance(p, str) and p else "")
        label = label + source
    return label


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (over split seeds) and n of test accuracy and macro-F1 per method x regime/k."""
    runs = runs.assign(k=runs["k"].astype("Int64"), method=_labels(runs))
    table = (
        runs.groupby(["method", "regime", "k"], dropna=False)
        .agg(acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"), f1_mean=("test_f1", "mean"),
             f1_std=("test_f1", "std"), n=("test_acc", "size"), chance=("chance", "first"))
        .reset_index()
    )
    table["order"] = [(REGIME_ORDER[r], -1 if pd.isna(k) else k) for r, k in zip(table.regime, table.k)]
    return table.sort_values(["method", "order"]).drop(columns="order").reset_index(drop=True)


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {0.0 if math.isnan(std) else std:.3f} (n={n})"


def markdown(table: pd.DataFrame, others: list[dict]) -> str:
    """Methods as rows, regimes as columns: test accuracy mean ± std over split seeds."""
    columns = []
    for regime, k in sorted({(r, k) for r, k in zip(table.regime, table.k)},
                            key=lambda rk: (REGIME_ORDER[rk[0]], -1 if pd.isna(rk[1]) else rk[1])):
        columns.append((regime, k, _regime_label(regime, k)))
    lines = ["| method | " + " | ".join(c[2] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, part in table.groupby("method", sort=True):
        cells = []
        for regime, k, _ in columns:
            hit = part[(part.regime == regime) & ((part.k == k) if not pd.isna(k) else part.k.isna())]
            row = hit.iloc[0] if len(hit) else None
            cells.append(_cell(row.acc_mean, row.acc_std, int(row.n)) if row is not None else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if len(table):
        lines.append(f"\nTest accuracy, mean ± std over split seeds; chance (majority class) {table.chance.max():.3f}.")
    if others:
        lines.append("\nNot in the table:")
        lines += [f"- {o['run']}: {o['status']} — {o['reason']}" for o in others]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path, title: str = "") -> None:
    """Accuracy against k (log axis), one line per method with ±std bands; zero-shot and
    full-data scores as horizontal references; chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(sorted(table.method.unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    few = table[table.k.notna() & (table.k > 0)]
    for method, part in few.groupby("method"):
        part = part.sort_values("k")
        std = part.acc_std.fillna(0)
        ax.plot(part.k, part.acc_mean, marker="o", color=colors[method], label=method)
        ax.fill_between(part.k, part.acc_mean - std, part.acc_mean + std, color=colors[method], alpha=0.15)
    for _, row in table[table.regime == "zero"].iterrows():
        ax.axhline(row.acc_mean, color=colors[row.method], ls=":", lw=1.5, label=f"{row.method} zero-shot")
    for _, row in table[table.regime == "full"].iterrows():
        ax.axhline(row.acc_mean, color=colors[row.method], ls="-.", lw=1.2, label=f"{row.method} full data")
    if len(table):
        ax.axhline(table.chance.max(), color="gray", ls="--", lw=1, label="chance")
    if len(few):
        ax.set_xscale("log")
        ks = sorted(few.k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)  # a short log axis labels its minor ticks (2x10^0, ...) otherwise
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: str | Path, echo: bool = True) -> dict:
    """Write report.md, report.csv and report.png into the sweep folder; return their paths."""
    sweep_dir = Path(sweep_dir)
    runs, others = collect(sweep_dir)
    if runs.empty:
        table = pd.DataFrame(columns=["method", "regime", "k", "acc_mean", "acc_std", "f1_mean", "f1_std", "n", "chance"])
        title = sweep_dir.name
    else:
        table = summarize(runs)
        title = f"{runs.task.iloc[0]} · {runs.backbone.iloc[0]}"
    text = f"# {title}\n\n" + markdown(table, others) + "\n"
    paths = {"md": sweep_dir / "report.md", "csv": sweep_dir / "report.csv", "png": sweep_dir / "report.png"}
    paths["md"].write_text(text)
    table.to_csv(paths["csv"], index=False)
    plot(table, paths["png"], title)
    if echo:
        print(text)
        print(f"plot: {paths['png']}")
    return {"table": table, "others": others, **paths}


class ReportCallback(Callback):
    """Hydra callback: write the report when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        report = write_report(config.hydra.sweep.dir)
        logger = OmegaConf.to_container(config.get("logger") or {}, resolve=False)
        if "Wandb" in str(logger.get("_target_", "")):
            from shotlab.tracking import log_report

            group = OmegaConf.select(config, "sweep_name")
            log_report({"project": logger.get("project"), "group": group}, Path(config.hydra.sweep.dir), report)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="shotlab-report", description="Write report.md/csv/png of a sweep folder.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/sweeps/<sweep_name>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    write_report(args.sweep_dir)


if __name__ == "__main__":
    main()
