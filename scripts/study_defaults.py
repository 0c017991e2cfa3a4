"""Summarise a hyper-parameter study on the validation split's HELD-OUT POOL (the examples no dev
sample draws from; test labels are never read): each candidate's mean accuracy on the pool over
the study's k values and split seeds, beside its mean dev-sample accuracy and the pool accuracy
of the zero-shot classifier it starts from (the method's k=0 run, when the study has one).

    python -m shotlab.train -m method=prompt_probe optimizer.lr=1e-3,1e-2 method.min_steps=0,300 \
        regime.k=4,16 seed=0,1,2 task.test_size=10 sweep_name=study-probes
    python -m shotlab.train method=prompt_probe regime.k=0 task.test_size=10 \
        hydra.run.dir=outputs/sweeps/study-probes/k0
    python scripts/study_defaults.py outputs/sweeps/study-probes

docs/fewshot_defaults.md holds the study that chose shotlab's few-shot defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

NOT_CANDIDATE = {"method", "regime", "regime.k", "seed", "train_seed", "sweep_name", "logger", "task.test_size"}


def pool_accuracy(run_dir: Path) -> float | None:
    """Accuracy on the held-out pool rows of a run's predictions.jsonl (None without them)."""
    rows = [r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines())
            if r["split"] == "heldout"]
    return sum(r["prediction"] == r["label"] for r in rows) / len(rows) if rows else None


def study_table(sweep_dir: Path) -> pd.DataFrame:
    """One row per method x candidate: mean / std of held-out pool accuracy over (k, seed), per k,
    mean dev accuracy, the pool accuracy before training, and the number of runs."""
    rows, start = [], {}
    for file in sweep_dir.glob("*/metrics.json"):
        m = json.loads(file.read_text())
        if m.get("status") != "ok":
            continue
        pool = pool_accuracy(file.parent)
        method = m.get("method_label", m["method"])
        if m["k"] == 0:
            start[method] = pool
            continue
        setting = {k: v for k, v in m.get("overrides", {}).items() if k not in NOT_CANDIDATE}
        rows.append({"method": method, "k": m["k"], "seed": m["seed"], "pool": pool, "dev": m.get("dev_acc"),
                     **setting})
    runs = pd.DataFrame(rows)
    keys = [c for c in runs.columns if c not in ("method", "k", "seed", "pool", "dev")]

    def candidate(part: pd.DataFrame) -> pd.Series:  # the keys this method's runs vary, as key=value
        varying = [c for c in keys if part[c].nunique(dropna=False) > 1]
        return part[varying].fillna("-").apply(lambda r: " ".join(f"{c}={r[c]}" for c in varying) or "(one)", axis=1)

    runs["candidate"] = pd.concat([candidate(part) for _, part in runs.groupby("method")])
    per_k = runs.pivot_table(index=["method", "candidate"], columns="k", values="pool", aggfunc="mean")
    per_k.columns = [f"pool k={k}" for k in per_k.columns]
    overall = runs.groupby(["method", "candidate"]).agg(pool_mean=("pool", "mean"), pool_std=("pool", "std"),
                                                        dev_mean=("dev", "mean"), runs=("pool", "size"))
    table = pd.concat([overall, per_k], axis=1).reset_index()
    table["pool before training"] = table.method.map(start)
    return table.sort_values(["method", "pool_mean"], ascending=[True, False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    table = study_table(parser.parse_args().sweep_dir)
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
