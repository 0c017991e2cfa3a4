"""Sweep report: selection on the dev sample, a table with bootstrap CIs, paired comparisons and
a learning-curve plot. Runs at multirun end and on demand:

    python -m shotlab.report outputs/sweeps/<sweep>

It writes report.md, report.csv (one line per row x k), comparisons.csv and report.png into the
sweep folder (and report_prompts.csv, comparisons_prompts.csv for a sweep over prompts;
report_ood.csv, comparisons_ood.csv for one with eval tasks). The protocol (LM-BFF, Gao et al.
2021): test labels are read once, to score the selected runs; everything chosen is chosen on the
dev sample.

Selection (selection.py). Runs with the same (task, backbone, method_label, init_from, k, split
seed) are candidates for one cell and seed; they differ in the hyper-parameters the sweep lists,
i.e. the override keys that take more than one value among them, other than the cell's own
(method, regime, regime.k, seed, train_seed) and run-control keys (config.NOT_IDENTITY: force,
logger, paths, ...). For methods that start from the zero-shot classifier (their runs record
`dev_acc_start`), "no training" is a candidate too: its dev numbers are those before training, its
test predictions those of the same method's k=0 run (seed 0). The best dev accuracy wins; a tie
goes to the higher mean gold-label log-probability on the dev sample; only where that ties too, a
fixed order ("no training", then override values as strings, then the run folder name).
Candidates without a dev accuracy rank last.

Recipe rows. Where there was a choice, each trained setting also gets a row of its own,
"<row> · recipe": the method as configured, no selection, so a reader sees both what the method
does and what a choice made on the dev sample's few labels picks.

Selection regret. Every run also scores the validation split's held-out pool (data/sampling.py:
examples no dev sample draws from). Per seed, the regret is the pool accuracy of the candidate best
on the pool minus that of the dev sample's choice; a cell reports its mean over seeds with the same
bootstrap CI over seeds and pool examples. It never reads the test split.

Out of domain. Runs that scored eval tasks (`eval_tasks`) get, per eval task, the same table and
comparisons over the same selected runs (the choices made on the training task's dev sample),
from their "eval:<task>" prediction rows: report_ood.csv, comparisons_ood.csv, a plot panel each.

Across prompts (prompts.py). A sweep over `task.prompt` has a row per (method, prompt); the same
selected runs also give one line per (method, k) over its prompts: mean, best, worst, spread, a CI
that resamples prompts too, the standard error of each source, and the prompt chosen on the dev
sample; the plot then draws each method's mean over prompts with a band from worst to best prompt.

Uncertainty. A (row, k) cell holds S selected runs (one per split seed) x N test examples of
0/1 correctness. It reports mean ± std over seeds (std of the per-seed accuracies, ddof=1) and a
95 % percentile bootstrap CI that resamples seeds and examples together: each of B=2000 reps
draws S seed indices, then N example indices, with replacement, from a generator seeded with
BOOTSTRAP_SEED afresh for every interval, so a sweep always gives the same report. Comparisons
use the same bootstrap on the per-example differences of two cells over the seeds both have
(a seed-free cell, k=0 or full data, pairs with every seed) and the same test examples.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from shotlab.report.prompts import across_prompts, prompt_comparisons
from shotlab.report.render import markdown, plot
from shotlab.report.runs import GROUP, collect
from shotlab.report.selection import select, selection_summary
from shotlab.report.stats import comparisons, label_budget, summarize


def write_report(sweep_dir: str | Path, echo: bool = True) -> dict:
    """Write report.md, report.csv, comparisons.csv and report.png into the sweep folder; return
    the tables (table, comparisons, selection), the runs not in the table, and the paths."""
    sweep_dir = Path(sweep_dir)
    runs, others = collect(sweep_dir)
    if runs.empty:
        table = pd.DataFrame(columns=["method", "regime", "k", "acc_mean", "acc_std", "ci_low", "ci_high", "n",
                                      "f1_mean", "dev_acc_mean", "label_budget", "selected", "chance", "task",
                                      "backbone", "kind", "regret", "regret_low", "regret_high", "heldout_n"])
        compared, selection = comparisons(table, []), selection_summary(pd.DataFrame(columns=GROUP))
        budget, notes, title, chosen, cells = pd.DataFrame(), [], sweep_dir.name, runs, []
    else:
        chosen, notes = select(runs)
        table, cells = summarize(chosen)
        compared, selection, budget = comparisons(table, cells), selection_summary(chosen), label_budget(runs)
        title = " · ".join("/".join(sorted(runs[col].astype(str).unique())) for col in ("task", "backbone"))
    ood = {}  # eval task -> (table, comparisons): the same selected runs on its test split
    for name in eval_tasks(runs):
        ood_table, ood_cells = summarize(chosen, eval_task=name)
        ood[name] = (ood_table, comparisons(ood_table, ood_cells))
    prompts, arrays = across_prompts(table, cells, chosen)  # empty unless the sweep ran several prompts
    prompts_compared = prompt_comparisons(prompts, arrays) if len(prompts) else None
    text = f"# {title}\n\n" + markdown(table, selection, compared, budget, others, notes, ood,
                                        (prompts, prompts_compared)) + "\n"
    paths = {"md": sweep_dir / "report.md", "csv": sweep_dir / "report.csv",
             "comparisons_csv": sweep_dir / "comparisons.csv", "png": sweep_dir / "report.png"}
    if ood:
        paths.update(ood_csv=sweep_dir / "report_ood.csv", ood_comparisons_csv=sweep_dir / "comparisons_ood.csv")
    if len(prompts):
        paths.update(prompts_csv=sweep_dir / "report_prompts.csv",
                     prompts_comparisons_csv=sweep_dir / "comparisons_prompts.csv")
        prompts.to_csv(paths["prompts_csv"], index=False)
        prompts_compared.to_csv(paths["prompts_comparisons_csv"], index=False)
    paths["md"].write_text(text)
    table.to_csv(paths["csv"], index=False)
    compared.to_csv(paths["comparisons_csv"], index=False)
    ood_table = ood_compared = None
    if ood:
        ood_table = pd.concat([t.assign(eval_task=n) for n, (t, _) in ood.items()], ignore_index=True)
        ood_compared = pd.concat([c.assign(eval_task=n) for n, (_, c) in ood.items()], ignore_index=True)
        ood_table.to_csv(paths["ood_csv"], index=False)
        ood_compared.to_csv(paths["ood_comparisons_csv"], index=False)
    plot(table, paths["png"], title, {n: t for n, (t, _) in ood.items()}, prompts)
    if echo:
        print(text)
        print(f"plot: {paths['png']}")
    return {"table": table, "comparisons": compared, "selection": selection, "others": others,
            "ood": ood_table, "ood_comparisons": ood_compared,
            "prompts": prompts if len(prompts) else None, "prompt_comparisons": prompts_compared, **paths}


def eval_tasks(runs: pd.DataFrame) -> list[str]:
    """The eval tasks any finished run scored, sorted."""
    if "eval" not in runs:
        return []
    return sorted({name for e in runs["eval"] if isinstance(e, dict) for name in e})


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
