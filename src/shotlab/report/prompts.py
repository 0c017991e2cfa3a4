"""Across prompts: one line per (method, k) over the prompts a sweep ran it on (`task.prompt`).

A sweep over prompts has a row per (method, prompt) in the main table, each selected on the dev
sample as usual. Here the same selected runs are read as a (P, S, N) array of 0/1 correctness,
prompts x split seeds x test examples, and summarised the way multi-prompt evaluation asks for
(Mizrahi et al. 2024; Sclar et al. 2023):

- the mean over prompts, the best and the worst prompt and their difference (the spread);
- a 95 % bootstrap CI that resamples prompts, split seeds and test examples (stats.bootstrap_ci on
  the 3-D array): a claim about the method, not about one prompt of it;
- the standard error each source contributes alone: the mean's spread when only prompts are
  resampled (seeds and examples held), only seeds, only examples; in closed form,
  sqrt(var(means along that axis) / its size), var with ddof=0, as a resampling of that axis gives;
- "prompt chosen on the dev sample": per split seed, the prompt whose selected run has the best
  dev accuracy (ties: dev gold-label log-probability, then prompt name), scored on test. The label
  budget is unchanged: the same dev sample chooses. Cells with no dev sample (k=0) have no such row.

k=0 lines with the same correctness everywhere (prompt_probe's and prompt_finetune's k=0 runs are the
zero-shot prompt) are one line that names them all, as the plot draws them.

Comparisons pair a method with the zero-shot prompt and with the best other method at the same k
on the prompts both ran, the same split seeds and test examples, with the same 3-way bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from shotlab.report.runs import regime_order
from shotlab.report.stats import Cell, _same_ids, bootstrap_ci, common_seeds

# A family cell: the same method (row label without its prompt) on the same task, backbone and k.
FAMILY = ["task", "backbone", "family", "init_from", "method_label", "regime", "k"]


def _stack(cells: list[Cell], seeds: list[int]) -> np.ndarray:
    """(P, S, N) correctness of one method's prompts on these split seeds."""
    return np.stack([c.correct[c.rows(seeds)] for c in cells])


def standard_errors(values: np.ndarray) -> tuple[float, float, float]:
    """(prompt, seed, example) standard error of the mean of a (P, S, N) array, each axis alone."""
    def alone(axis: int) -> float:
        others = tuple(a for a in range(3) if a != axis)
        means = values.mean(axis=others)
        return float(math.sqrt(means.var() / len(means)))

    return alone(0), alone(1), alone(2)


def _dev_choice(chosen: pd.DataFrame, key: dict, prompts: list[str], seeds: list[int]) -> list[int] | None:
    """Per split seed, the index of the prompt whose selected run is best on the dev sample; None
    where a prompt's run has no dev accuracy (k=0) or no run for that seed."""
    runs = chosen[(chosen.kind == "selected")]
    for col in FAMILY:
        runs = runs[runs[col].isna()] if key[col] is None else runs[runs[col] == key[col]]
    picks = []
    for seed in seeds:
        per_prompt = []
        for i, prompt in enumerate(prompts):
            run = runs[(runs.prompt == prompt) & (runs.seed == seed)]
            if len(run) != 1 or pd.isna(run.dev_acc.iloc[0]):
                return None
            logprob = run.dev_logprob.iloc[0]
            per_prompt.append((-run.dev_acc.iloc[0], -logprob if not pd.isna(logprob) else math.inf, prompt, i))
        picks.append(min(per_prompt)[3])  # dev numbers and names only: no test number is read
    return picks


def across_prompts(table: pd.DataFrame, cells: list[Cell], chosen: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The across-prompt table (one line per method and k) and, by line, its key and its cells (one
    per prompt), for the comparisons. Empty unless the sweep ran more than one prompt."""
    keep = [i for i, kind in enumerate(table.kind) if kind == "selected" and cells[i].correct is not None]
    if table.empty or table.prompt.nunique() < 2 or not keep:
        return pd.DataFrame(), {}
    families: dict[tuple, list[int]] = {}
    for i in keep:
        families.setdefault(tuple(cells[i].key[c] for c in FAMILY), []).append(i)
    lines, arrays, same_zero = [], {}, {}
    for fkey, members in families.items():
        members = sorted(members, key=lambda i: cells[i].key["prompt"])
        key = dict(zip(FAMILY, fkey))
        group = [cells[i] for i in members]
        prompts = [c.key["prompt"] for c in group]
        for c in group[1:]:
            _same_ids(group[0].ids, c.ids, f"{key['family']} across prompts")
        seeds = common_seeds(group)
        if not seeds:
            continue
        values = _stack(group, seeds)
        if key["regime"] == "zero":  # k=0 runs of methods that start from the zero-shot prompt: one line
            same = (key["task"], key["backbone"], key["init_from"], tuple(prompts), tuple(seeds), values.tobytes())
            if same in same_zero:
                _merge(lines[same_zero[same]], arrays, same_zero[same], key, group)
                continue
            same_zero[same] = len(lines)
        per_prompt = values.mean(axis=(1, 2))
        best, worst = int(per_prompt.argmax()), int(per_prompt.argmin())
        low, high = bootstrap_ci(values)
        se_prompt, se_seed, se_example = standard_errors(values)
        picks = _dev_choice(chosen, key, prompts, seeds) if len(prompts) > 1 else None
        if picks is not None:
            picked = values[picks, np.arange(len(seeds))]  # (S, N): each seed's dev-chosen prompt
            dev_mean, (dev_low, dev_high) = float(picked.mean()), bootstrap_ci(picked)
            dev_chosen = "; ".join(f"seed {s}: {prompts[p]}" for s, p in zip(seeds, picks))
        else:
            dev_mean = dev_low = dev_high = math.nan
            dev_chosen = ""
        arrays[len(lines)] = (key, group)
        lines.append({
            "method": key["family"], "regime": key["regime"], "k": key["k"], "prompts": len(prompts),
            "n": len(seeds), "acc_mean": float(values.mean()), "ci_low": low, "ci_high": high,
            "best_prompt": prompts[best], "best_acc": float(per_prompt[best]),
            "worst_prompt": prompts[worst], "worst_acc": float(per_prompt[worst]),
            "spread": float(per_prompt[best] - per_prompt[worst]),
            "se_prompt": se_prompt, "se_seed": se_seed, "se_example": se_example,
            "dev_chosen_acc": dev_mean, "dev_chosen_low": dev_low, "dev_chosen_high": dev_high,
            "dev_chosen": dev_chosen, "chance": float(table.chance.max()), "task": key["task"],
            "backbone": key["backbone"], "prompt_names": ", ".join(prompts),
        })
    if not lines:
        return pd.DataFrame(), {}
    frame = pd.DataFrame(lines).astype({"k": "Int64"})
    order = sorted(range(len(frame)), key=lambda i: (frame.method[i], *regime_order(frame.regime[i], frame.k[i])))
    return frame.iloc[order].reset_index(drop=True), {new: arrays[old] for new, old in enumerate(order)}


def _merge(line: dict, arrays: dict, index: int, key: dict, group: list[Cell]) -> None:
    """Fold a k=0 family into the line of one with the same correctness on every prompt, seed and
    example (prompt_probe's and prompt_finetune's k=0 runs are the zero-shot prompt): the line names
    both, and the zero-shot prompt's own key stays the one comparisons look up."""
    line["method"] = ", ".join(sorted({*line["method"].split(", "), key["family"]}))
    if key["method_label"] == "prompt":
        arrays[index] = (key, group)


def _paired(a: list[Cell], b: list[Cell]) -> dict | None:
    """Mean difference a - b over the prompts, split seeds and test examples both have, with the
    3-way bootstrap CI; None without a common prompt or seed."""
    other = {c.key["prompt"]: c for c in b}
    pairs = [(c, other[c.key["prompt"]]) for c in a if c.key["prompt"] in other]
    seeds = common_seeds([c for pair in pairs for c in pair]) if pairs else []
    if not seeds:
        return None
    differences = np.stack([x.correct[x.rows(seeds)] - y.correct[y.rows(seeds)] for x, y in pairs])  # (P, S, N)
    low, high = bootstrap_ci(differences)
    return {"diff": float(differences.mean()), "ci_low": low, "ci_high": high, "prompts": len(pairs),
            "n": len(seeds)}


def prompt_comparisons(frame: pd.DataFrame, arrays: dict) -> pd.DataFrame:
    """Per (method, k>0): against the zero-shot prompt and the best other method at the same k
    (best by its mean over prompts: a description of the table, not a choice), paired on the same
    prompts, seeds and test examples."""
    lines = []
    for i, (key, *_) in arrays.items():
        if key["k"] == 0:
            continue
        same = [j for j, (other, *_) in arrays.items() if j != i and other["task"] == key["task"]]
        zero = [j for j in same if arrays[j][0]["method_label"] == "prompt" and arrays[j][0]["k"] == 0
                and (arrays[j][0]["backbone"], arrays[j][0]["init_from"]) == (key["backbone"], key["init_from"])]
        peers = [j for j in same if arrays[j][0]["family"] != key["family"]
                 and (arrays[j][0]["regime"], arrays[j][0]["k"]) == (key["regime"], key["k"])]
        best = sorted(peers, key=lambda j: (-frame.acc_mean[j], frame.method[j]))[:1]
        for versus, found in (("zero-shot prompt", zero[:1]), ("best other method", best)):
            result = _paired(arrays[i][1], arrays[found[0]][1]) if found else None
            if result is None:
                continue
            lines.append({"method": key["family"], "regime": key["regime"], "k": key["k"], "versus": versus,
                          "other": arrays[found[0]][0]["family"], **result,
                          "excludes_zero": result["ci_low"] > 0 or result["ci_high"] < 0})
    columns = ["method", "regime", "k", "versus", "other", "diff", "ci_low", "ci_high", "prompts", "n",
               "excludes_zero"]
    return pd.DataFrame(lines, columns=columns).astype({"k": "Int64"})
