"""Sweep report: selection on the dev sample, a table with bootstrap CIs, paired comparisons and
a learning-curve plot. Runs at multirun end and on demand:

    python -m shotlab.report outputs/sweeps/<sweep>

It writes report.md, report.csv (one line per row x k), comparisons.csv and report.png into the
sweep folder. The protocol (LM-BFF, Gao et al. 2021): test labels are read once, to score the
selected runs; everything chosen is chosen on the dev sample.

Selection. Runs with the same (task, backbone, method_label, init_from, k, split seed) are
candidates for one cell and seed; they differ in the hyper-parameters the sweep lists, i.e. the
override keys other than method, regime, regime.k, seed and train_seed that take more than one
value among them. For methods that start from the zero-shot classifier (their runs record
`dev_acc_start`), "no training" is a candidate too: its dev accuracy is dev_acc_start, its test
predictions those of the same method's k=0 run (seed 0). The best dev accuracy wins; candidates
without one rank last. Ties go by a fixed order: "no training" first (the simpler model wins a
tie), then trained candidates by their override values compared as strings (keys sorted by
name), then by run folder name.

Uncertainty. A (row, k) cell holds S selected runs (one per split seed) x N test examples of
0/1 correctness. It reports mean ± std over seeds (std of the per-seed accuracies, ddof=1) and a
95 % percentile bootstrap CI that resamples seeds and examples together: each of B=2000 reps
draws S seed indices, then N example indices, with replacement, from a generator seeded with
BOOTSTRAP_SEED afresh for every interval, so a sweep always gives the same report. Comparisons
use the same bootstrap on the per-example differences of two cells over the seeds both have
(a seed-free cell, k=0 or full data, pairs with every seed) and the same test examples.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback

REGIME_ORDER = {"zero": 0, "one": 1, "few": 2, "full": 3}
NOT_CANDIDATE_KEYS = {"method", "regime", "regime.k", "seed", "train_seed"}  # they name the cell, not a choice
NO_TRAINING = "no training"
TRAIN_OR_NOT = "train or not"  # the pseudo hyper-parameter the "no training" candidate adds
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
GROUP = ["task", "backbone", "row", "init_from", "method_label", "regime", "k"]  # one cell of the table
TIE_ORDER = ('"no training" first, then trained candidates by their override values compared as '
             "strings (keys sorted by name), then by run folder name; candidates without a dev accuracy rank last")


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
    for col in ("dev_acc", "dev_acc_start", "num_dev", "label_budget"):  # absent or null in older runs
        runs[col] = pd.to_numeric(runs[col]) if col in runs else math.nan
    runs["label_budget"] = runs["label_budget"].fillna(runs["num_train"] + runs["num_dev"])
    runs["k"] = runs["k"].astype("Int64")
    runs["row"] = _labels(runs)
    return runs, others


def _labels(runs: pd.DataFrame) -> pd.Series:
    """A row label: the method label, plus the backbone or task when a sweep compares several,
    plus the run it started from (head swap) when there is one."""
    label = runs["method_label"].astype(str)
    for col in ("backbone", "task"):
        if runs[col].nunique() > 1:
            label = label + " · " + runs[col].astype(str)
    return label + runs["init_from"].map(lambda p: f" ← {Path(p).name}" if p else "")


def _regime_label(regime: str, k) -> str:
    return {"zero": "zero", "one": "one (k=1)", "full": "full"}.get(regime, f"few (k={k})")


def _regime_order(regime: str, k) -> tuple:
    return REGIME_ORDER[regime], -1 if pd.isna(k) else k


def _cell_key(key: tuple) -> dict:
    """GROUP's values of a groupby key, k as int or None (full data) so plain == works on it."""
    cell = dict(zip(GROUP, key))
    return {**cell, "k": None if pd.isna(cell["k"]) else int(cell["k"])}


# --- selection: the dev sample only --------------------------------------------------------------

def _choose(candidates: list[dict]) -> dict:
    """The candidate with the best dev accuracy, ties by the fixed order (TIE_ORDER). It sees dev
    accuracies and the order only, never a test number."""
    return min(candidates, key=lambda c: (-c["dev_acc"] if not math.isnan(c["dev_acc"]) else math.inf, c["order"]))


def select(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (cell, split seed): the candidate chosen on the dev sample and the run whose
    test predictions it stands for; plus notes for report.md."""
    zero_shot = {(r["task"], r["backbone"], r["method_label"], r["init_from"]): r
                 for r in runs[runs.k.eq(0).fillna(False) & runs.seed.eq(0)].to_dict("records")}
    chosen, notes = [], []
    for key, group in runs.groupby([*GROUP, "seed"], dropna=False, sort=True):
        cell = {**_cell_key(key[:-1]), "seed": key[-1]}
        records = group.sort_values("run").to_dict("records")
        values = pd.DataFrame([{k: str(v) for k, v in r["overrides"].items()} for r in records])
        keys = sorted(c for c in values.columns if c not in NOT_CANDIDATE_KEYS and values[c].nunique(dropna=False) > 1)
        candidates = []
        for r in records:
            setting = {k: str(r["overrides"].get(k, "")) for k in keys}
            candidates.append({"name": ", ".join(f"{k}={v}" for k, v in setting.items()) or r["run"],
                               "setting": setting, "dev_acc": r["dev_acc"],
                               "order": (1, tuple(setting.values()), r["run"]), "scored": r})
        start = group.dev_acc_start.dropna()
        if len(start) and cell["k"] != 0:
            zero = zero_shot.get((cell["task"], cell["backbone"], cell["method_label"], cell["init_from"]))
            if zero is not None:
                for c in candidates:
                    c["setting"][TRAIN_OR_NOT] = "trained"
                candidates.append({"name": NO_TRAINING, "setting": {TRAIN_OR_NOT: NO_TRAINING},
                                   "dev_acc": float(start.iloc[0]), "order": (0,), "scored": zero})
            else:
                note = (f'no "{NO_TRAINING}" candidate for {cell["method_label"]}: its k=0 run (seed 0) is not '
                        "in this sweep, so only trained candidates were compared")
                notes += [note] if note not in notes else []
        best = _choose(candidates)
        searched = {}  # hyper-parameter -> values; a lone candidate is no selection
        if len(candidates) > 1:
            for c in candidates:
                for k, v in c["setting"].items():
                    searched.setdefault(k, set()).add(v)
        scored = best["scored"]  # from here on test numbers may be read: the choice is made
        chosen.append({**cell, "selected": best["name"] if len(candidates) > 1 else "", "won": best["setting"],
                       "searched": searched, "dev_acc": best["dev_acc"], "test_acc": scored["test_acc"],
                       "test_f1": scored["test_f1"], "run_dir": scored["run_dir"], "chance": scored["chance"],
                       "label_budget": group.label_budget.max()})
    return pd.DataFrame(chosen).astype({"k": "Int64"}), notes


def selection_summary(chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (row, k) and hyper-parameter: the values searched and how often each won over split seeds."""
    lines = []
    for key, part in chosen.groupby(GROUP, dropna=False, sort=True):
        cell = _cell_key(key)
        searched: dict[str, set] = {}
        for s in part.searched:
            for k, v in s.items():
                searched.setdefault(k, set()).update(v)
        for k in sorted(searched):
            wins = Counter(w[k] for w, s in zip(part.won, part.searched) if k in s and k in w)
            lines.append({"method": cell["row"], "regime": cell["regime"], "k": cell["k"], "hyper-parameter": k,
                          "searched": ", ".join(sorted(searched[k])),
                          "chosen": ", ".join(f"{v}: {wins[v]}" for v in sorted(searched[k])),
                          "seeds": sum(1 for s in part.searched if k in s)})
    return pd.DataFrame(lines, columns=["method", "regime", "k", "hyper-parameter", "searched", "chosen", "seeds"])


# --- uncertainty: split seeds x test examples ----------------------------------------------------

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


def _test_correctness(run_dir: str) -> tuple[list[str], np.ndarray] | None:
    """Test ids and 0/1 correctness of a selected run, in the test split's order; None for an old run."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.exists():
        return None
    test = [r for r in map(json.loads, path.read_text().splitlines()) if r["split"] == "test"]
    return [str(r["id"]) for r in test], np.array([r["prediction"] == r["label"] for r in test], dtype=float)


def _same_ids(a: list[str], b: list[str], where: str) -> None:
    if a != b:
        raise ValueError(f"{where}: runs score different test examples (ids differ); a sweep must use one test split")


def bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    """95 % percentile CI of the mean of an (S, N) matrix, resampling seeds and examples together."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    s, n = values.shape
    means = np.empty(BOOTSTRAP_REPS)
    for b in range(BOOTSTRAP_REPS):
        seeds, examples = rng.integers(s, size=s), rng.integers(n, size=n)
        means[b] = values[np.ix_(seeds, examples)].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarize(chosen: pd.DataFrame) -> tuple[pd.DataFrame, list[Cell]]:
    """The table: per (row, k), test accuracy of the selected runs as mean ± std over split seeds
    and a bootstrap CI; and the cells (correctness matrices) the comparisons pair up."""
    lines, cells = [], []
    for key, part in chosen.groupby(GROUP, dropna=False, sort=True):
        key, part = _cell_key(key), part.sort_values("seed")
        scored = [_test_correctness(d) for d in part.run_dir]
        ids = correct = None
        if all(scored):
            ids = scored[0][0]
            for other, _ in scored[1:]:
                _same_ids(ids, other, f"{key['row']} at {_regime_label(key['regime'], key['k'])}")
            correct = np.stack([c for _, c in scored])
        cell = Cell(key, [int(s) for s in part.seed], part.test_acc.to_numpy(float), ids, correct)
        cells.append(cell)
        low, high = bootstrap_ci(correct) if correct is not None else (math.nan, math.nan)
        lines.append({
            "method": cell.key["row"], "regime": cell.key["regime"], "k": cell.key["k"],
            "acc_mean": cell.accs.mean(), "acc_std": cell.accs.std(ddof=1) if len(cell.accs) > 1 else 0.0,
            "ci_low": low, "ci_high": high, "n": len(part), "f1_mean": part.test_f1.mean(),
            "dev_acc_mean": part.dev_acc.mean(), "label_budget": part.label_budget.max(),
            "selected": "; ".join(f"seed {s}: {c}" for s, c in zip(part.seed, part.selected) if c),
            "chance": part.chance.iloc[0], "task": cell.key["task"], "backbone": cell.key["backbone"],
        })
    table = pd.DataFrame(lines).astype({"k": "Int64", "label_budget": "Int64"})
    order = [(r, *_regime_order(g, k)) for r, g, k in zip(table.method, table.regime, table.k)]
    index = sorted(range(len(table)), key=order.__getitem__)
    return table.iloc[index].reset_index(drop=True), [cells[i] for i in index]


# --- comparisons: paired differences on the same seeds and test examples --------------------------

def _paired(a: Cell, b: Cell) -> dict | None:
    """Mean accuracy difference a - b with its paired bootstrap CI, or None without common seeds."""
    seeds = a.seeds if b.seed_free else b.seeds if a.seed_free else [s for s in a.seeds if s in b.seeds]
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
    """For each cell with k>0 or full data: against the zero-shot prompt of the same backbone, and
    against the best other row at the same k (best by mean test accuracy in this table: a
    description of the table, not a model choice)."""
    lines = []
    for i, a in enumerate(cells):
        if a.key["k"] == 0:
            continue
        same_test = [j for j, b in enumerate(cells) if j != i and b.key["task"] == a.key["task"]]
        zero = [j for j in same_test if cells[j].key["method_label"] == "prompt" and cells[j].key["k"] == 0
                and (cells[j].key["backbone"], cells[j].key["init_from"]) == (a.key["backbone"], a.key["init_from"])]
        peers = [j for j in same_test if cells[j].key["row"] != a.key["row"]
                 and (cells[j].key["regime"], cells[j].key["k"]) == (a.key["regime"], a.key["k"])]
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

    lines = [{"regime": _regime_label(regime, k), "train labels": values(part.num_train),
              "dev labels": values(part.num_dev), "label budget": values(part.label_budget),
              "order": _regime_order(regime, k)}
             for (regime, k), part in runs.groupby(["regime", "k"], dropna=False)]
    return pd.DataFrame(lines).sort_values("order").drop(columns="order")


# --- report.md and the plot ---------------------------------------------------------------------

def _ci(low: float, high: float, fmt: str = ".3f") -> str:
    return f" [{low:{fmt}}, {high:{fmt}}]" if not math.isnan(low) else ""


def markdown(table: pd.DataFrame, selection: pd.DataFrame, compared: pd.DataFrame, budget: pd.DataFrame,
             others: list[dict], notes: list[str]) -> str:
    """Sections: the table, comparisons, selection, label budget, runs not in the table."""
    out = []
    if len(table):
        cells = table.assign(
            column=[_regime_label(r, k) for r, k in zip(table.regime, table.k)],
            cell=[f"{m:.3f} ± {s:.3f}{_ci(lo, hi)} (n={n})"
                  for m, s, lo, hi, n in zip(table.acc_mean, table.acc_std, table.ci_low, table.ci_high, table.n)])
        regimes = sorted(set(zip(table.regime, table.k)), key=lambda rk: _regime_order(*rk))
        columns = list(dict.fromkeys(_regime_label(r, k) for r, k in regimes))
        wide = cells.pivot(index="method", columns="column", values="cell").reindex(columns=columns).fillna("–")
        out += [wide.reset_index().to_markdown(index=False), "",
                "Test accuracy of the runs selected on the dev sample: mean ± std over split seeds "
                f"[95 % bootstrap CI over split seeds and test examples, B={BOOTSTRAP_REPS}] (n = split seeds); "
                f"chance (majority class) {table.chance.max():.3f}."]
        no_ci = table[table.ci_low.isna()]
        if len(no_ci):
            out.append("No CI for " + ", ".join(f"{m} at {_regime_label(r, k)}" for m, r, k in
                                                 zip(no_ci.method, no_ci.regime, no_ci.k))
                       + ": a selected run has no predictions.jsonl (an older run); mean ± std only.")
    else:
        out.append("No finished runs.")

    out += ["", "## Comparisons", "",
            "Mean test-accuracy difference of a row against the zero-shot prompt (same backbone) and against "
            "the best other row at the same k (best by mean accuracy in the table above: a description, not a "
            "model choice), paired over the same split seeds and test examples, with a 95 % paired bootstrap CI. "
            "* marks a CI that excludes 0.", ""]
    if len(compared):
        shown = pd.DataFrame({
            "method": compared.method, "k": [_regime_label(r, k) for r, k in zip(compared.regime, compared.k)],
            "versus": [f"{v}: {o}" for v, o in zip(compared.versus, compared.other)],
            "Δ accuracy [95 % CI]": [f"{d:+.3f}{_ci(lo, hi, '+.3f')}{' *' if x else ''}" for d, lo, hi, x in
                                     zip(compared["diff"], compared.ci_low, compared.ci_high, compared.excludes_zero)],
            "n": compared.n})
        out.append(shown.to_markdown(index=False))
    else:
        out.append("Nothing to compare (no k>0 or full-data cell with a reference in this sweep).")

    out += ["", "## Selection", "",
            "Runs that differ only in the sweep's hyper-parameters are candidates for one (row, k, split seed); "
            "the one with the best dev-sample accuracy is reported (LM-BFF). Methods that start from the "
            f'zero-shot classifier also have the candidate "{NO_TRAINING}" (its dev accuracy before training, '
            f"its test predictions those of the method's k=0 run). Ties: {TIE_ORDER}.", ""]
    if len(selection):
        shown = selection.assign(k=[_regime_label(r, k) for r, k in zip(selection.regime, selection.k)])
        out.append(shown.drop(columns="regime").rename(columns={"chosen": "times chosen"}).to_markdown(index=False))
    else:
        out.append("Nothing to select: each (row, k, split seed) has a single run.")
    out += [f"- {note}" for note in notes]

    out += ["", "## Label budget", "",
            "Labels a run may see: k per class to train plus the dev sample (same size, same split seed), which "
            "selects hyper-parameters, checkpoints and whether to train. Test labels are read only to score the "
            "selected runs.", ""]
    out.append(budget.to_markdown(index=False) if len(budget) else "No finished runs.")

    if others:
        skipped = Counter(o["reason"] for o in others if o["status"] == "skipped")
        out += ["", "## Not in the table", ""]
        out += [f"- {n} run{'s' if n > 1 else ''} skipped: {reason}" for reason, n in sorted(skipped.items())]
        out += [f"- {o['run']}: {o['status']} — {o['reason']}" for o in others if o["status"] != "skipped"]
    return "\n".join(out)


def plot(table: pd.DataFrame, path: Path, title: str = "") -> None:
    """Accuracy against k (log axis), one line per row with its 95 % CI band; zero-shot and
    full-data scores as horizontal references (CI as a light band); chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(sorted(table.method.unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    few = table[table.k.notna() & (table.k > 0)]
    for method, part in few.groupby("method"):
        part = part.sort_values("k")
        ci = [part.acc_mean - part.ci_low, part.ci_high - part.acc_mean]  # NaN (no CI): no bar, no band
        ax.errorbar(part.k, part.acc_mean, yerr=ci, marker="o", capsize=3, color=colors[method], label=method)
        ax.fill_between(part.k, part.ci_low, part.ci_high, color=colors[method], alpha=0.15)
    for regime, style in (("zero", ":"), ("full", "-.")):
        for _, row in table[table.regime == regime].iterrows():
            name = "zero-shot" if regime == "zero" else "full data"
            ax.axhline(row.acc_mean, color=colors[row.method], ls=style, lw=1.4, label=f"{row.method} {name}")
            if not math.isnan(row.ci_low):
                ax.axhspan(row.ci_low, row.ci_high, color=colors[row.method], alpha=0.06)
    if len(table):
        ax.axhline(table.chance.max(), color="gray", ls="--", lw=1, label="chance")
    if len(few):
        ax.set_xscale("log")
        ks = sorted(few.k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)  # a short log axis labels its minor ticks (2x10^0, ...) otherwise
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("test accuracy (95 % CI)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: str | Path, echo: bool = True) -> dict:
    """Write report.md, report.csv, comparisons.csv and report.png into the sweep folder; return
    the tables (table, comparisons, selection), the runs not in the table, and the paths."""
    sweep_dir = Path(sweep_dir)
    runs, others = collect(sweep_dir)
    if runs.empty:
        table = pd.DataFrame(columns=["method", "regime", "k", "acc_mean", "acc_std", "ci_low", "ci_high", "n",
                                      "f1_mean", "dev_acc_mean", "label_budget", "selected", "chance"])
        compared, selection = comparisons(table, []), selection_summary(pd.DataFrame(columns=GROUP))
        budget, notes, title = pd.DataFrame(), [], sweep_dir.name
    else:
        chosen, notes = select(runs)
        table, cells = summarize(chosen)
        compared, selection, budget = comparisons(table, cells), selection_summary(chosen), label_budget(runs)
        title = " · ".join("/".join(sorted(runs[col].astype(str).unique())) for col in ("task", "backbone"))
    text = f"# {title}\n\n" + markdown(table, selection, compared, budget, others, notes) + "\n"
    paths = {"md": sweep_dir / "report.md", "csv": sweep_dir / "report.csv",
             "comparisons_csv": sweep_dir / "comparisons.csv", "png": sweep_dir / "report.png"}
    paths["md"].write_text(text)
    table.to_csv(paths["csv"], index=False)
    compared.to_csv(paths["comparisons_csv"], index=False)
    plot(table, paths["png"], title)
    if echo:
        print(text)
        print(f"plot: {paths['png']}")
    return {"table": table, "comparisons": compared, "selection": selection, "others": others, **paths}


class ReportCallback(Callback):
    """Hydra callback: write the report when a multirun ends (and log it when the sweep logs to W&B)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        report = write_report(config.hydra.sweep.dir)
        logger = config.get("logger")  # logger=none leaves it empty
        logger = OmegaConf.to_container(logger, resolve=False) if logger else {}
        if str(logger.get("_target_", "")).endswith("WandbLogger"):
            from shotlab.tracking import log_report

            group = OmegaConf.select(config, "sweep_name")
            log_report({"project": logger.get("project"), "group": group}, Path(config.hydra.sweep.dir), report)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="shotlab-report",
                                     description="Write report.md/csv, comparisons.csv and report.png of a sweep folder.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/sweeps/<sweep_name>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    write_report(args.sweep_dir)


if __name__ == "__main__":
    main()
