"""Uncertainty and comparisons: bootstrap CIs over split seeds and test examples, the table of
cells, paired differences between cells, and the label budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shotlab.data.sampling import EVAL
from shotlab.report.runs import GROUP, cell_key, correctness, regime_label, regime_order

BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0


@dataclass
class Cell:
    """The selected runs of one (row, k), in split-seed order."""

    key: dict  # GROUP's values
    seeds: list[int]
    accs: np.ndarray  # (S,) test accuracy per seed, from metrics.json
    ids: list[str] | None  # the N test example ids, None when a run has no predictions.jsonl
    correct: np.ndarray | None  # (S, N) 1.0 where prediction == label

    @property
    def seed_free(self) -> bool:
        """k=0 and full data sample nothing: one run (seed 0) stands for every seed."""
        return len(self.seeds) == 1 and self.key["k"] in (0, None)

    def rows(self, seeds: list[int]) -> list[int]:
        """Positions of these split seeds' runs."""
        return [0 if self.seed_free else self.seeds.index(s) for s in seeds]


def common_seeds(cells: list[Cell]) -> list[int]:
    """The split seeds every cell has, in the first sampled cell's order (a seed-free cell, k=0
    or full data, has them all)."""
    sampled = [c for c in cells if not c.seed_free]
    if not sampled:
        return cells[0].seeds
    return [s for s in sampled[0].seeds if all(s in c.seeds for c in sampled)]


def _same_ids(a: list[str], b: list[str], where: str) -> None:
    if a != b:
        raise ValueError(f"{where}: runs score different test examples (ids differ); a sweep must use one test split")


def bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    """95 % percentile CI of the mean of an (S, N) matrix, resampling seeds and examples together;
    of a (P, S, N) array, prompts as well: each axis is resampled with replacement, in order."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.empty(BOOTSTRAP_REPS)
    for b in range(BOOTSTRAP_REPS):
        means[b] = values[np.ix_(*(rng.integers(n, size=n) for n in values.shape))].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarize(chosen: pd.DataFrame, eval_task: str | None = None) -> tuple[pd.DataFrame, list[Cell]]:
    """The table: per (row, k), test accuracy of the selected runs as mean ± std over split seeds
    and a bootstrap CI; and the cells (correctness matrices) the comparisons pair up. With
    `eval_task`, the same runs (the same choices) on that eval task's test split instead; cells whose
    runs did not score it are left out."""
    lines, cells = [], []
    if eval_task is not None:
        scored_it = [eval_task in e for e in chosen["eval"]] if "eval" in chosen else [False] * len(chosen)
        chosen = chosen[scored_it].copy()
        numbers = [e[eval_task] for e in chosen["eval"]]
        chosen["test_acc"] = [n["test_acc"] for n in numbers]
        chosen["test_f1"] = [n["test_f1"] for n in numbers]
        chosen["chance"] = [n["chance"] for n in numbers]
    split = "test" if eval_task is None else f"{EVAL}{eval_task}"
    for key, part in chosen.groupby(GROUP, dropna=False, sort=True):
        key, part = cell_key(key), part.sort_values("seed")
        scored = [correctness(d, split) for d in part.run_dir]
        ids = correct = None
        if all(scored):
            ids = scored[0][0]
            for other, _ in scored[1:]:
                _same_ids(ids, other, f"{key['row']} at {regime_label(key['regime'], key['k'])}")
            correct = np.stack([c for _, c in scored])
        cell = Cell(key, [int(s) for s in part.seed], part.test_acc.to_numpy(float), ids, correct)
        cells.append(cell)
        low, high = bootstrap_ci(correct) if correct is not None else (math.nan, math.nan)
        lost = list(part.regret) if "regret" in part else []
        regret = np.stack(lost) if lost and all(r is not None for r in lost) else None  # (S, N held out)
        regret_low, regret_high = bootstrap_ci(regret) if regret is not None else (math.nan, math.nan)
        lines.append({
            "method": cell.key["row"], "regime": cell.key["regime"], "k": cell.key["k"],
            "acc_mean": cell.accs.mean(), "acc_std": cell.accs.std(ddof=1) if len(cell.accs) > 1 else 0.0,
            "ci_low": low, "ci_high": high, "n": len(part), "f1_mean": part.test_f1.mean(),
            "dev_acc_mean": part.dev_acc.mean(), "label_budget": part.label_budget.max(),
            "selected": "; ".join(f"seed {s}: {c}" for s, c in zip(part.seed, part.selected) if c),
            "chance": part.chance.iloc[0], "task": cell.key["task"], "backbone": cell.key["backbone"],
            "prompt": cell.key["prompt"],
            "kind": part.kind.iloc[0] if "kind" in part else "selected",
            "regret": regret.mean() if regret is not None else math.nan, "regret_low": regret_low,
            "regret_high": regret_high, "heldout_n": regret.shape[1] if regret is not None else 0,
        })
    if not lines:
        return pd.DataFrame(columns=["method", "regime", "k", "acc_mean"]), []
    table = pd.DataFrame(lines).astype({"k": "Int64", "label_budget": "Int64"})
    order = [(r, *regime_order(g, k)) for r, g, k in zip(table.method, table.regime, table.k)]
    index = sorted(range(len(table)), key=order.__getitem__)
    return table.iloc[index].reset_index(drop=True), [cells[i] for i in index]


# --- comparisons: paired differences on the same seeds and test examples --------------------------

def _paired(a: Cell, b: Cell) -> dict | None:
    """Mean accuracy difference a - b with its paired bootstrap CI, or None without common seeds."""
    seeds = common_seeds([a, b])
    if not seeds:
        return None
    if a.correct is None or b.correct is None:  # an old run: the difference of means, no CI
        diff = a.accs[a.rows(seeds)].mean() - b.accs[b.rows(seeds)].mean()
        return {"diff": float(diff), "ci_low": math.nan, "ci_high": math.nan, "n": len(seeds)}
    _same_ids(a.ids, b.ids, f"{a.key['row']} vs {b.key['row']}")
    differences = a.correct[a.rows(seeds)] - b.correct[b.rows(seeds)]  # (S, N) in {-1, 0, 1}
    low, high = bootstrap_ci(differences)
    return {"diff": float(differences.mean()), "ci_low": low, "ci_high": high, "n": len(seeds)}


def comparisons(table: pd.DataFrame, cells: list[Cell]) -> pd.DataFrame:
    """For each cell with k>0 or full data (selected and recipe rows alike): against the zero-shot
    prompt of the same backbone, and against the best row of another method at the same k (best by
    mean test accuracy in this table: a description of the table, not a model choice)."""
    lines = []
    for i, a in enumerate(cells):
        if a.key["k"] == 0:
            continue
        # Paired on the same test examples and the same prompt (a sweep over prompts compares
        # methods prompt by prompt).
        same_test = [j for j, b in enumerate(cells) if j != i and b.key["task"] == a.key["task"]
                     and b.key["prompt"] == a.key["prompt"]]
        zero = [j for j in same_test if cells[j].key["method_label"] == "prompt" and cells[j].key["k"] == 0
                and (cells[j].key["backbone"], cells[j].key["init_from"]) == (a.key["backbone"], a.key["init_from"])]
        # Other methods at the same k: a row's recipe twin (same cell but for the row) is not a peer.
        twin = [g for g in GROUP if g != "row"]
        peers = [j for j in same_test if cells[j].key["row"] != a.key["row"]
                 and (cells[j].key["regime"], cells[j].key["k"]) == (a.key["regime"], a.key["k"])
                 and [cells[j].key[g] for g in twin] != [a.key[g] for g in twin]]
        best = sorted(peers, key=lambda j: (-table.acc_mean[j], table.method[j]))[:1]
        for versus, found in (("zero-shot prompt", zero[:1]), ("best other row", best)):
            result = _paired(a, cells[found[0]]) if found else None
            if result is None:
                continue
            excludes = result["ci_low"] > 0 or result["ci_high"] < 0
            lines.append({"method": a.key["row"], "regime": a.key["regime"], "k": a.key["k"], "versus": versus,
                          "other": cells[found[0]].key["row"], **result, "excludes_zero": excludes})
    columns = ["method", "regime", "k", "versus", "other", "diff", "ci_low", "ci_high", "n", "excludes_zero"]
    return pd.DataFrame(lines, columns=columns).astype({"k": "Int64"})


def label_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Labels used per (regime, k): k per class to train + the dev sample, from the runs themselves."""
    def values(series: pd.Series) -> str:
        return ", ".join(str(int(v)) for v in sorted(series.dropna().unique())) or "–"

    lines = [{"regime": regime_label(regime, k), "train labels": values(part.num_train),
              "dev labels": values(part.num_dev), "label budget": values(part.label_budget),
              "order": regime_order(regime, k)}
             for (regime, k), part in runs.groupby(["regime", "k"], dropna=False)]
    return pd.DataFrame(lines).sort_values("order").drop(columns="order")
