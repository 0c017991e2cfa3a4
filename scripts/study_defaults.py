"""Summarise a hyper-parameter study by DEV-sample accuracy only (test labels are never read):
mean dev accuracy of each candidate over the study's k values and split seeds.

    python -m shotlab.train -m method=prompt_probe optimizer.lr=1e-3,1e-2 method.min_steps=30,300 \
        regime.k=4,16 seed=0,1,2 task.test_size=10 sweep_name=study-probes
    python scripts/study_defaults.py outputs/sweeps/study-probes

docs/fewshot_defaults.md holds the study that chose shotlab's few-shot defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

NOT_CANDIDATE = {"method", "regime", "regime.k", "seed", "train_seed"}


def dev_table(sweep_dir: Path) -> pd.DataFrame:
    """One row per method x candidate: mean / std / min of dev accuracy over (k, seed), per k, and n."""
    rows = []
    for file in sweep_dir.glob("*/metrics.json"):
        m = json.loads(file.read_text())
        if m.get("status") != "ok" or m.get("dev_acc") is None:
            continue
        setting = {k: v for k, v in m.get("overrides", {}).items() if k not in NOT_CANDIDATE}
        rows.append({"method": m.get("method_label", m["method"]), "k": m["k"], "seed": m["seed"], "dev_acc": m["dev_acc"],
                     "dev_acc_start": m.get("dev_acc_start"), **setting})
    runs = pd.DataFrame(rows)
    keys = [c for c in runs.columns if c not in ("method", "k", "seed", "dev_acc", "dev_acc_start")]

    def candidate(part: pd.DataFrame) -> pd.Series:  # the keys this method's runs vary, as key=value
        varying = [c for c in keys if part[c].nunique(dropna=False) > 1]
        return part[varying].fillna("-").apply(lambda r: " ".join(f"{c}={r[c]}" for c in varying) or "(one)", axis=1)

    runs["candidate"] = pd.concat([candidate(part) for _, part in runs.groupby("method")])
    per_k = runs.pivot_table(index=["method", "candidate"], columns="k", values="dev_acc", aggfunc="mean")
    per_k.columns = [f"dev k={k}" for k in per_k.columns]
    overall = runs.groupby(["method", "candidate"]).dev_acc.agg(["mean", "std", "size"])
    overall.columns = ["dev mean", "dev std", "runs"]
    start = runs.groupby(["method", "candidate"]).dev_acc_start.mean().rename("dev before training")
    table = pd.concat([overall, per_k, start], axis=1).reset_index()
    return table.sort_values(["method", "dev mean"], ascending=[True, False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    table = dev_table(parser.parse_args().sweep_dir)
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
