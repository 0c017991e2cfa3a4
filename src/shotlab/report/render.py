"""report.md and report.png from the tables."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd

from shotlab.report.runs import regime_label, regime_order
from shotlab.report.selection import NO_TRAINING, RECIPE, TIE_ORDER
from shotlab.report.stats import BOOTSTRAP_REPS


def _ci(low: float, high: float, fmt: str = ".3f") -> str:
    return f" [{low:{fmt}}, {high:{fmt}}]" if not math.isnan(low) else ""


def _wide(table: pd.DataFrame) -> str:
    """The table as markdown: one line per row, one column per regime, `mean ± std [CI] (n)`."""
    cells = table.assign(
        column=_k_labels(table),
        cell=[f"{m:.3f} ± {s:.3f}{_ci(lo, hi)} (n={n})"
              for m, s, lo, hi, n in zip(table.acc_mean, table.acc_std, table.ci_low, table.ci_high, table.n)])
    regimes = sorted(set(zip(table.regime, table.k)), key=lambda rk: regime_order(*rk))
    columns = list(dict.fromkeys(regime_label(r, k) for r, k in regimes))
    wide = cells.pivot(index="method", columns="column", values="cell").reindex(columns=columns).fillna("–")
    return wide.reset_index().to_markdown(index=False)


def _differences(compared: pd.DataFrame) -> str:
    """The comparisons as markdown, * where the paired CI excludes 0."""
    return pd.DataFrame({
        "method": compared.method, "k": _k_labels(compared),
        "versus": [f"{v}: {o}" for v, o in zip(compared.versus, compared.other)],
        "Δ accuracy [95 % CI]": [f"{d:+.3f}{_ci(lo, hi, '+.3f')}{' *' if x else ''}" for d, lo, hi, x in
                                 zip(compared["diff"], compared.ci_low, compared.ci_high, compared.excludes_zero)],
        **({"prompts": compared.prompts} if "prompts" in compared else {}),
        "n": compared.n}).to_markdown(index=False)


def prompts_markdown(prompts: pd.DataFrame, compared: pd.DataFrame | None) -> list[str]:
    """The across-prompts section: each method over the prompts it ran on, and its comparisons."""
    if prompts is None or not len(prompts):
        return []
    shown = pd.DataFrame({
        "method": prompts.method, "k": _k_labels(prompts), "prompts": prompts.prompts,
        "mean [95 % CI]": [f"{m:.3f}{_ci(lo, hi)}" for m, lo, hi in zip(prompts.acc_mean, prompts.ci_low, prompts.ci_high)],
        "best": [f"{a:.3f} ({p})" for a, p in zip(prompts.best_acc, prompts.best_prompt)],
        "worst": [f"{a:.3f} ({p})" for a, p in zip(prompts.worst_acc, prompts.worst_prompt)],
        "spread": [f"{s:.3f}" for s in prompts.spread],
        "SE prompt / seed / example": [f"{p:.3f} / {s:.3f} / {e:.3f}" for p, s, e in
                                       zip(prompts.se_prompt, prompts.se_seed, prompts.se_example)],
        "prompt chosen on dev [95 % CI]": [f"{m:.3f}{_ci(lo, hi)}" if not math.isnan(m) else "– (no dev sample)"
                                           if k == 0 else "–" for m, lo, hi, k in
                                           zip(prompts.dev_chosen_acc, prompts.dev_chosen_low,
                                               prompts.dev_chosen_high, prompts.k)],
        "n": prompts.n})
    out = ["", "## Across prompts", "",
           "Each method over the prompts the sweep ran it on (`task.prompt`; names in report_prompts.csv): test "
           "accuracy averaged over prompts, split seeds and test examples, with a 95 % bootstrap CI that resamples "
           "all three, so it covers the choice of prompt as well; the best and the worst prompt and their "
           "difference (spread); the standard error each source adds on its own (the mean's spread when only "
           "prompts, only seeds or only examples are resampled). \"Prompt chosen on dev\": per split seed, the "
           "prompt whose selected run is best on the dev sample (ties: dev gold-label log-probability, then "
           "name), scored on test; the same labels choose, so the label budget is unchanged. Zero-shot has no "
           "dev sample, so nothing chooses its prompt; methods whose k=0 runs are the zero-shot prompt (the same "
           "predictions) share its line.", "", shown.to_markdown(index=False)]
    if compared is not None and len(compared):
        out += ["", "Mean over prompts against the zero-shot prompt and the best other method at the same k, "
                "paired on the same prompts, split seeds and test examples (95 % bootstrap CI over all three; "
                "* excludes 0).", "", _differences(compared)]
    return out


def ood_markdown(ood: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> list[str]:
    """The out-of-domain section: per eval task, the same rows (the same runs, chosen on the
    training task's dev sample) scored on that task's test split, and their comparisons."""
    if not ood:
        return []
    out = ["", "## Out of domain", "",
           "The runs of the table above (the same choices, made on the training task's dev sample), scored on "
           "other tasks' test splits with the training task's prompt and classifier (`eval_tasks`). Same CIs "
           "and paired comparisons; * marks a CI that excludes 0."]
    for name, (table, compared) in ood.items():
        out += ["", f"### {name}", ""]
        if not len(table):
            out.append("No selected run scored it.")
            continue
        out += [_wide(table), "", f"Test accuracy on {name}; chance (majority class) {table.chance.max():.3f}."]
        if len(compared):
            out += ["", _differences(compared)]
    return out


def markdown(table: pd.DataFrame, selection: pd.DataFrame, compared: pd.DataFrame, budget: pd.DataFrame,
             others: list[dict], notes: list[str], ood: dict | None = None,
             prompts: tuple[pd.DataFrame, pd.DataFrame | None] | None = None) -> str:
    """Sections: the table, comparisons, across prompts, out of domain, selection, label budget,
    runs not in the table."""
    out = []
    if len(table):
        out += [_wide(table), "",
                "Test accuracy, mean ± std over split seeds "
                f"[95 % bootstrap CI over split seeds and test examples, B={BOOTSTRAP_REPS}] (n = split seeds); "
                f"chance (majority class) {table.chance.max():.3f}. A method's own row holds the runs selected on "
                f"the dev sample (what a practitioner with this label budget would pick); `<method> · {RECIPE}` "
                "rows hold the same method as configured and trained, with no selection (what the method does; "
                "one row per setting where the sweep searched several)."]
        no_ci = table[table.ci_low.isna()]
        if len(no_ci):
            out.append("No CI for " + ", ".join(f"{m} at {regime_label(r, k)}" for m, r, k in
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
        out.append(_differences(compared))
    else:
        out.append("Nothing to compare (no k>0 or full-data cell with a reference in this sweep).")
    out += prompts_markdown(*(prompts or (None, None)))
    out += ood_markdown(ood or {})

    out += ["", "## Selection", "",
            "Runs that differ only in the sweep's hyper-parameters are candidates for one (row, k, split seed); "
            "the one with the best dev-sample accuracy is reported (LM-BFF). Run-control overrides (+force, "
            "logger, paths) are never candidates' hyper-parameters. Methods that start from the "
            f'zero-shot classifier also have the candidate "{NO_TRAINING}" (its dev accuracy and gold-label '
            f"log-probability before training, its test predictions those of the method's k=0 run). "
            f"Ties of dev accuracy: {TIE_ORDER}.", ""]
    if len(selection):
        shown = selection.assign(k=_k_labels(selection))
        out.append(shown.drop(columns="regime").rename(columns={"chosen": "times chosen"}).to_markdown(index=False))
    else:
        out.append("Nothing to select: each (row, k, split seed) has a single run.")
    out += [f"- {note}" for note in notes]

    out += ["", "## Selection regret", "",
            "What the dev sample's choice costs: every candidate is also scored on the validation split's "
            "held-out pool, examples that no dev sample draws from and nothing chooses on (never the test "
            "split). Regret is the pool accuracy of the candidate best on the pool minus that of the dev "
            "sample's choice, averaged over split seeds, with a 95 % bootstrap CI over seeds and pool "
            "examples (the best candidate is picked on the same pool, so the regret leans high by its own "
            "noise). 0 means the few labels chose as well as the pool would have.", ""]
    chosen_rows = table[(table.kind == "selected") & (table.selected != "")] if len(table) else table
    if len(chosen_rows):
        shown = pd.DataFrame({
            "method": chosen_rows.method, "k": _k_labels(chosen_rows),
            "regret [95 % CI]": [f"{d:.3f}{_ci(lo, hi)}" if not math.isnan(d) else "– (no held-out predictions)"
                                 for d, lo, hi in zip(chosen_rows.regret, chosen_rows.regret_low, chosen_rows.regret_high)],
            "held-out examples": chosen_rows.heldout_n, "n": chosen_rows.n})
        out.append(shown.to_markdown(index=False))
    else:
        out.append("No selection was made, so nothing was lost to one.")

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


def _k_labels(frame: pd.DataFrame) -> list[str]:
    """The regime column as the report prints it ("few (k=16)", "zero", ...)."""
    return [regime_label(r, k) for r, k in zip(frame.regime, frame.k)]


def plot(table: pd.DataFrame, path: Path, title: str = "", ood: dict[str, pd.DataFrame] | None = None,
         prompts: pd.DataFrame | None = None) -> None:
    """Accuracy against k (log axis), one line per row with its 95 % CI band; zero-shot and
    full-data scores as horizontal references (CI as a light band); chance dashed. With `ood`
    (eval task -> its table), one more panel per eval task, the same rows in the same colours.
    With `prompts` (a sweep over prompts), the main panel draws each method's mean over prompts,
    its CI as error bars and the band from its worst to its best prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, table, "test accuracy (95 % CI)")]
    if prompts is not None and len(prompts):
        panels = [(f"{title}\nmean over prompts; band: worst to best prompt",
                   prompts.assign(band_low=prompts.worst_acc, band_high=prompts.best_acc), "test accuracy (95 % CI)")]
    panels += [(f"out of domain: {name}", part, None) for name, part in (ood or {}).items() if len(part)]
    fig, axes = plt.subplots(1, len(panels), figsize=(10 + 4.5 * (len(panels) - 1), 4.8), sharey=True, squeeze=False)
    names = sorted({m for _, part, _ in panels for m in part.method})
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for ax, (name, part, ylabel) in zip(axes[0], panels):
        _panel(ax, part, colors, name, ylabel)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the data
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax, table: pd.DataFrame, colors: dict, title: str, ylabel: str | None) -> None:
    few = table[table.k.notna() & (table.k > 0)]
    for method, part in few.groupby("method"):
        part = part.sort_values("k")
        ci = [part.acc_mean - part.ci_low, part.ci_high - part.acc_mean]  # NaN (no CI): no bar, no band
        recipe = RECIPE in method  # a recipe row: dashed, a lighter band, beside its selected row
        ax.errorbar(part.k, part.acc_mean, yerr=ci, marker="o", capsize=3, color=colors.get(method), label=method,
                    ls="--" if recipe else "-")
        low, high = (part.band_low, part.band_high) if "band_low" in part else (part.ci_low, part.ci_high)
        ax.fill_between(part.k, low, high, color=colors.get(method), alpha=0.07 if recipe else 0.15)
        if "band_low" in part:  # worst and best prompt marked too, so one k alone still shows its spread
            for edge, marker in ((low, "v"), (high, "^")):
                ax.plot(part.k, edge, ls=":", lw=0.8, marker=marker, ms=5, color=colors.get(method))
    for regime, style in (("zero", ":"), ("full", "-.")):
        name = "zero-shot" if regime == "zero" else "full data"
        # Rows with the same score (prompt_probe's and prompt_finetune's k=0 runs are the zero-shot
        # prompt) share one line, named after all of them.
        band = ["band_low", "band_high"] if "band_low" in table else ["ci_low", "ci_high"]
        for _, same in table[table.regime == regime].groupby(["acc_mean", *band], dropna=False):
            row = same.iloc[0]
            label = f"{name}: {', '.join(sorted(same.method))}"
            ax.axhline(row.acc_mean, color=colors.get(row.method), ls=style, lw=1.4, label=label)
            if not math.isnan(row[band[0]]):
                ax.axhspan(row[band[0]], row[band[1]], color=colors.get(row.method), alpha=0.06)
    if len(table):
        ax.axhline(table.chance.max(), color="gray", ls="--", lw=1, label="chance")
    if len(few):
        ax.set_xscale("log")
        ks = sorted(few.k.unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)  # a short log axis labels its minor ticks (2x10^0, ...) otherwise
    ax.set_xlabel("labelled examples per class (k)")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
