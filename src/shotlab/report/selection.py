"""Selection on the dev sample only: the candidates of a (row, k, split seed), the one its dev
sample chooses, and what was searched. Nothing here reads a test number before the choice."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from shotlab.config import NOT_IDENTITY
from shotlab.report.runs import GROUP, cell_key, correctness

# Keys that name the cell, not a choice; and run-control keys (config.NOT_IDENTITY: +force=true,
# logger, paths, ...), which say how a run is recorded, never what it computes.
NOT_CANDIDATE_KEYS = {"method", "regime", "regime.k", "seed", "train_seed", "eval_tasks"}  # eval tasks: scored, not trained
NO_TRAINING = "no training"
TRAIN_OR_NOT = "train or not"  # the pseudo hyper-parameter the "no training" candidate adds
RECIPE = "recipe"  # a recipe row: "<row> · recipe"
TIE_ORDER = ("the higher mean log-probability of the gold label on the dev sample (a continuous criterion, so "
             "ties of accuracy are decided on evidence), then, only where that ties too, "
             '"no training" first, then trained candidates by their override values compared as strings (keys '
             "sorted by name), then by run folder name; candidates without a dev accuracy rank last")


def _searchable(key: str) -> bool:
    return key not in NOT_CANDIDATE_KEYS and key.split(".")[0] not in NOT_IDENTITY


def _choose(candidates: list[dict]) -> dict:
    """The candidate with the best dev accuracy, ties by its dev gold-label log-probability, then by
    the fixed order (TIE_ORDER). It sees dev numbers and the order only, never a test number."""
    def worst_if_missing(value: float) -> float:
        return -value if not math.isnan(value) else math.inf

    return min(candidates, key=lambda c: (worst_if_missing(c["dev_acc"]), worst_if_missing(c["dev_logprob"]),
                                          c["order"]))


def regret(candidates: list[dict], best: dict) -> np.ndarray | None:
    """(N,) per held-out example: correctness of the candidate best on the held-out pool minus that
    of the dev sample's choice (its mean is the selection regret, >= 0); None when a candidate has
    no held-out rows or the candidates scored different pools."""
    pools = [correctness(c["scored"]["run_dir"], "heldout") for c in candidates]
    if any(p is None for p in pools) or any(p[0] != pools[0][0] for p in pools):
        return None
    correct = {id(c): p[1] for c, p in zip(candidates, pools)}
    oracle = max(candidates, key=lambda c: correct[id(c)].mean())
    return correct[id(oracle)] - correct[id(best)]


def _row(cell: dict, scored: dict, label_budget, **extra) -> dict:
    evals = scored.get("eval")
    return {**cell, "test_acc": scored["test_acc"], "test_f1": scored["test_f1"], "run_dir": scored["run_dir"],
            "chance": scored["chance"], "label_budget": label_budget, "eval": evals if isinstance(evals, dict) else {},
            **extra}


def select(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (cell, split seed): the candidate chosen on the dev sample and the run whose
    test predictions it stands for, with its selection regret on the held-out pool; plus, where
    there was a choice, one recipe row per trained setting (the method as configured, no selection,
    kind "recipe"); plus notes for report.md."""
    zero_shot = {(r["task"], r["backbone"], r["prompt"], r["method_label"], r["init_from"]): r
                 for r in runs[runs.k.eq(0).fillna(False) & runs.seed.eq(0)].to_dict("records")}
    chosen, notes = [], []
    # The hyper-parameters searched are those the cell's runs vary, over all its split seeds, so a
    # seed whose sweep is not finished still names its candidates (and recipe rows) the same way.
    searched_keys = {}
    for key, part in runs.groupby(GROUP, dropna=False, sort=True):
        values = pd.DataFrame([{k: str(v) for k, v in o.items()} for o in part.overrides])
        searched_keys[key] = sorted(c for c in values.columns if _searchable(c) and values[c].nunique(dropna=False) > 1)
    for key, group in runs.groupby([*GROUP, "seed"], dropna=False, sort=True):
        cell = {**cell_key(key[:-1]), "seed": key[-1]}
        records = group.sort_values("run").to_dict("records")
        keys = searched_keys[key[:-1]]
        candidates = []
        for r in records:
            setting = {k: str(r["overrides"].get(k, "")) for k in keys}
            candidates.append({"name": ", ".join(f"{k}={v}" for k, v in setting.items()) or r["run"],
                               "setting": setting, "dev_acc": r["dev_acc"], "dev_logprob": r["dev_logprob"],
                               "order": (1, tuple(setting.values()), r["run"]), "scored": r})
        trained = list(candidates)
        start = group.dev_acc_start.dropna()
        if len(start) and cell["k"] != 0:
            zero = zero_shot.get((cell["task"], cell["backbone"], cell["prompt"], cell["method_label"], cell["init_from"]))
            if zero is not None:
                for c in candidates:
                    c["setting"][TRAIN_OR_NOT] = "trained"
                logprob = group.dev_logprob_start.dropna()
                candidates.append({"name": NO_TRAINING, "setting": {TRAIN_OR_NOT: NO_TRAINING},
                                   "dev_acc": float(start.iloc[0]),
                                   "dev_logprob": float(logprob.iloc[0]) if len(logprob) else math.nan,
                                   "order": (0,), "scored": zero})
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
        # From here on other numbers may be read: the choice is made.
        lost = regret(candidates, best) if len(candidates) > 1 else None
        budget = group.label_budget.max()
        chosen.append(_row(cell, best["scored"], budget, kind="selected",
                           selected=best["name"] if len(candidates) > 1 else "", won=best["setting"],
                           searched=searched, dev_acc=best["dev_acc"], dev_logprob=best["dev_logprob"],
                           regret=lost))
        if len(candidates) > 1:  # what each trained setting does, unselected
            for c in trained:
                label = f"{cell['row']} · {RECIPE}" + (f" ({c['name']})" if len(trained) > 1 else "")
                chosen.append(_row({**cell, "row": label}, c["scored"], budget, kind=RECIPE, selected="", won={},
                                   searched={}, dev_acc=c["dev_acc"], dev_logprob=c["dev_logprob"],
                                   regret=None))
    return pd.DataFrame(chosen).astype({"k": "Int64"}), notes


def selection_summary(chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (row, k) and hyper-parameter: the values searched and how often each won over split seeds."""
    lines = []
    for key, part in chosen.groupby(GROUP, dropna=False, sort=True):
        cell = cell_key(key)
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
