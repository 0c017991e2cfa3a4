"""The sweep report on hand-built sweep folders (no model): selection on the dev sample only,
cells that are the selected runs, bootstrap CIs and paired comparisons, and what report.md says."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shotlab.report import write_report

N = 200  # test examples


def write_run(sweep: Path, name: str, correct, *, method: str = "finetune", k: int | None = 4, seed: int = 0,
              dev_acc: float | None = None, dev_acc_start: float | None = None, overrides: dict | None = None,
              labels=None, predictions: bool = True, heldout=None, evals: dict | None = None, **more) -> dict:
    """A run folder as train.run writes it: .hydra/, metrics.json and predictions.jsonl (with the
    held-out pool's rows when `heldout`, their 0/1 correctness, is given, and each eval task's rows
    and metrics for `evals`, task -> 0/1 correctness); `more` goes into metrics.json."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    correct = np.asarray(correct, dtype=bool)
    labels = np.arange(len(correct)) % 2 if labels is None else np.asarray(labels)
    predicted = np.where(correct, labels, 1 - labels)
    num_train = {0: 0, None: 500}.get(k, 2 * (k or 0))
    metrics = {
        "status": "ok", "task": "toy", "backbone": "tiny", "method": method, "method_label": method,
        "regime": {0: "zero", 1: "one", None: "full"}.get(k, "few"), "k": k, "seed": seed, "init_from": None,
        "test_acc": float(correct.mean()), "test_f1": float(correct.mean()), "chance": 0.5, "num_test": len(correct),
        "dev_acc": dev_acc, "dev_acc_start": dev_acc_start, "num_train": num_train, "num_dev": num_train,
        "label_budget": 2 * num_train,
        "overrides": {"method": method, "regime.k": str(k), "seed": str(seed), **(overrides or {})}, **more,
    }
    evals = {name: np.asarray(c, dtype=bool) for name, c in (evals or {}).items()}
    if evals:
        metrics["eval"] = {name: {"test_acc": float(c.mean()), "test_f1": float(c.mean()), "chance": 0.5,
                                  "num_test": len(c)} for name, c in evals.items()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    if predictions:
        rows = [{"split": "test", "id": f"t{i}", "label": int(y), "prediction": int(p),
                 "scores": [float(p == 0), float(p == 1)]} for i, (y, p) in enumerate(zip(labels, predicted))]
        rows += [{"split": "dev", "id": f"d{i}", "label": i % 2, "prediction": 0, "scores": [1.0, 0.0]}
                 for i in range(num_train)]
        rows += [{"split": "heldout", "id": f"h{i}", "label": i % 2, "prediction": i % 2 if c else 1 - i % 2,
                  "scores": [0.0, 0.0]} for i, c in enumerate(np.asarray(heldout if heldout is not None else [], bool))]
        rows += [{"split": f"eval:{name}", "id": f"{name}{i}", "label": i % 2, "prediction": i % 2 if c else 1 - i % 2,
                  "scores": [0.0, 0.0]} for name, cs in evals.items() for i, c in enumerate(cs)]
        (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return metrics


def coin(p: float, seed: int) -> np.ndarray:
    """N examples, each correct with probability p."""
    return np.random.default_rng(seed).random(N) < p


def cell(table: pd.DataFrame, method: str, k) -> pd.Series:
    rows = table[(table.method == method) & (table.k.isna() if k is None else table.k == k)]
    assert len(rows) == 1
    return rows.iloc[0]


def lr_sweep(sweep: Path) -> dict[tuple[int, str], dict]:
    """finetune at k=4 over 3 split seeds with two learning rates, plus the zero-shot prompt.
    The dev accuracies make 0.001 win seeds 0 and 2, 0.003 seed 1, each against its test score."""
    write_run(sweep, "prompt", coin(0.6, 99), method="prompt", k=0)
    dev = {(0, "0.001"): 0.75, (0, "0.003"): 0.5, (1, "0.001"): 0.5, (1, "0.003"): 0.625,
           (2, "0.001"): 0.875, (2, "0.003"): 0.75}
    test_p = {"0.001": 0.6, "0.003": 0.85}  # 0.003 is better on test: selection must not see that
    return {(seed, lr): write_run(sweep, f"lr={lr},seed={seed}", coin(test_p[lr], 10 * seed + len(lr)), seed=seed,
                                  dev_acc=d, overrides={"optimizer.lr": lr, "task.test_size": "200"})
            for (seed, lr), d in dev.items()}


def test_cells_are_the_runs_selected_on_dev_and_the_files_say_so(tmp_path):
    runs = lr_sweep(tmp_path)
    report = write_report(tmp_path, echo=False)
    winners = [runs[(0, "0.001")], runs[(1, "0.003")], runs[(2, "0.001")]]
    accs = np.array([m["test_acc"] for m in winners])

    written = pd.read_csv(tmp_path / "report.csv")
    for table in (report["table"], written):
        row = cell(table, "finetune", 4)
        assert row.acc_mean == pytest.approx(accs.mean())
        assert row.acc_std == pytest.approx(accs.std(ddof=1))
        assert row.n == 3 and row.label_budget == 16
        assert row.dev_acc_mean == pytest.approx(np.mean([0.75, 0.625, 0.875]))
        assert row.selected == "seed 0: optimizer.lr=0.001; seed 1: optimizer.lr=0.003; seed 2: optimizer.lr=0.001"
        assert row.ci_low < row.acc_mean < row.ci_high
        zero = cell(table, "prompt", 0)
        assert zero.n == 1 and zero.acc_std == 0 and pd.isna(zero.dev_acc_mean)
    assert list(written.columns[:11]) == ["method", "regime", "k", "acc_mean", "acc_std", "ci_low", "ci_high", "n",
                                          "f1_mean", "dev_acc_mean", "label_budget"]

    # task.test_size has one value, so it is not a hyper-parameter that was searched
    assert report["selection"][["method", "hyper-parameter", "searched", "chosen", "seeds"]].values.tolist() == [
        ["finetune", "optimizer.lr", "0.001, 0.003", "0.001: 2, 0.003: 1", 3]]
    md = (tmp_path / "report.md").read_text()
    assert "| finetune" in md and f"{accs.mean():.3f} ± {accs.std(ddof=1):.3f} [" in md
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_selection_never_reads_test_labels(tmp_path):
    lr_sweep(tmp_path)
    before = write_report(tmp_path, echo=False)["table"]

    rng = np.random.default_rng(0)
    for run in tmp_path.glob("*/metrics.json"):
        rows = [json.loads(line) for line in (run.parent / "predictions.jsonl").read_text().splitlines()]
        labels = rng.permutation([r["label"] for r in rows if r["split"] == "test"])
        for r, y in zip((r for r in rows if r["split"] == "test"), labels):
            r["label"] = int(y)
        (run.parent / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics = json.loads(run.read_text())
        metrics["test_acc"] = float(np.mean([r["label"] == r["prediction"] for r in rows if r["split"] == "test"]))
        run.write_text(json.dumps(metrics))
    after = write_report(tmp_path, echo=False)["table"]

    assert list(after.selected) == list(before.selected)
    assert cell(after, "finetune", 4).acc_mean != pytest.approx(cell(before, "finetune", 4).acc_mean)


def test_no_training_candidate_wins_on_dev_and_reports_the_zero_shot_predictions(tmp_path):
    zero = coin(0.7, 1)
    write_run(tmp_path, "probe-k0", zero, method="prompt_probe", k=0)
    # seed 0: dev before training beats both trained candidates; seed 1: a trained one beats it;
    # seed 2: a tie with the best trained candidate, which "no training" wins by the fixed order.
    for seed, start, devs in ((0, 0.8, (0.6, 0.65)), (1, 0.7, (0.7, 0.75)), (2, 0.7, (0.7, 0.6))):
        for lr, dev in zip(("0.001", "0.003"), devs):
            write_run(tmp_path, f"probe,lr={lr},seed={seed}", coin(0.9, seed), method="prompt_probe", seed=seed,
                      dev_acc=dev, dev_acc_start=start, overrides={"optimizer.lr": lr})
    report = write_report(tmp_path, echo=False)
    row = cell(report["table"], "prompt_probe", 4)
    assert row.selected == "seed 0: no training; seed 1: optimizer.lr=0.003; seed 2: no training"
    assert row.acc_mean == pytest.approx((zero.mean() * 2 + coin(0.9, 1).mean()) / 3)
    assert row.label_budget == 16  # choosing not to train still used the k-shot and dev labels
    assert row.dev_acc_mean == pytest.approx(np.mean([0.8, 0.75, 0.7]))
    selection = report["selection"].set_index("hyper-parameter")
    assert selection.loc["train or not", "chosen"] == "no training: 2, trained: 1"
    assert selection.loc["optimizer.lr", "chosen"] == "0.001: 0, 0.003: 1"


def test_a_dev_accuracy_tie_goes_to_the_better_gold_label_log_probability(tmp_path):
    write_run(tmp_path, "probe-k0", coin(0.7, 1), method="prompt_probe", k=0)
    # Every trained candidate ties "no training" on dev accuracy; the dev sample's log-probability
    # of the gold label decides: seed 0 trained (better), seed 1 no training (better), seed 2 the
    # better of the two learning rates.
    logprobs = {0: (-0.4, (-0.3, -0.9)), 1: (-0.4, (-0.5, -0.6)), 2: (-0.7, (-0.65, -0.6))}
    for seed, (start, trained) in logprobs.items():
        for lr, logprob in zip(("0.001", "0.003"), trained):
            write_run(tmp_path, f"probe,lr={lr},seed={seed}", coin(0.9, seed), method="prompt_probe", seed=seed,
                      dev_acc=0.75, dev_acc_start=0.75, dev_logprob=logprob, dev_logprob_start=start,
                      overrides={"optimizer.lr": lr})
    report = write_report(tmp_path, echo=False)
    row = cell(report["table"], "prompt_probe", 4)
    assert row.selected == "seed 0: optimizer.lr=0.001; seed 1: no training; seed 2: optimizer.lr=0.003"
    assert "gold label on the dev sample" in report["md"].read_text()


def test_recipe_rows_are_the_plain_mean_of_each_trained_setting(tmp_path):
    runs = lr_sweep(tmp_path)
    table = write_report(tmp_path, echo=False)["table"]
    for lr in ("0.001", "0.003"):
        row = cell(table, f"finetune · recipe (optimizer.lr={lr})", 4)
        accs = [runs[(seed, lr)]["test_acc"] for seed in (0, 1, 2)]
        assert row.kind == "recipe" and row.n == 3 and row.selected == ""
        assert row.acc_mean == pytest.approx(np.mean(accs)) and row.acc_std == pytest.approx(np.std(accs, ddof=1))
        assert row.ci_low < row.acc_mean < row.ci_high
    assert cell(table, "finetune", 4).kind == "selected"
    assert cell(table, "prompt", 0).kind == "selected" and not table.method.str.startswith("prompt ·").any()


def test_a_lone_recipe_row_stands_beside_its_no_training_choice(tmp_path):
    # prompt_finetune as configured (one setting) against "no training": its recipe row is the
    # trained runs whatever the dev sample chose, and its comparisons pair it with zero-shot.
    write_run(tmp_path, "prompt", coin(0.7, 1), method="prompt", k=0)
    write_run(tmp_path, "pf-k0", coin(0.7, 1), method="prompt_finetune", k=0)
    trained = {seed: write_run(tmp_path, f"pf-{seed}", coin(0.85, seed), method="prompt_finetune", seed=seed,
                               dev_acc=0.5, dev_acc_start=0.75) for seed in (0, 1, 2)}
    report = write_report(tmp_path, echo=False)
    chosen, recipe = cell(report["table"], "prompt_finetune", 4), cell(report["table"], "prompt_finetune · recipe", 4)
    assert chosen.selected == "seed 0: no training; seed 1: no training; seed 2: no training"
    assert recipe.acc_mean == pytest.approx(np.mean([m["test_acc"] for m in trained.values()]))
    compared = report["comparisons"].set_index(["method", "versus"])
    assert compared.loc[("prompt_finetune · recipe", "zero-shot prompt"), "diff"] == pytest.approx(
        recipe.acc_mean - coin(0.7, 1).mean())
    assert ("prompt_finetune · recipe", "best other row") not in compared.index  # its own selected row is no peer


def test_run_control_overrides_are_never_searched(tmp_path):
    # The same candidate run once with +force=true and another logger, folders elsewhere: not a choice.
    write_run(tmp_path, "a", coin(0.7, 0), dev_acc=0.5, overrides={"force": "true", "logger": "none"})
    write_run(tmp_path, "b", coin(0.7, 1), seed=1, dev_acc=0.5, overrides={"output_dir": "/x", "logger": "csv",
                                                                              "hydra.run.dir": "/y"})
    write_run(tmp_path, "c", coin(0.7, 2), seed=2, dev_acc=0.5, overrides={"ckpt_path": "/z"})
    report = write_report(tmp_path, echo=False)
    assert report["selection"].empty and cell(report["table"], "finetune", 4).selected == ""
    assert not report["table"].method.str.contains("recipe").any()


def test_the_bootstrap_resamples_split_seeds(tmp_path):
    # Seeds that disagree completely (all right, all wrong), examples within a seed that agree:
    # over examples alone the CI would be a point; over seeds it spans nearly everything.
    for seed, right in ((0, True), (1, False), (2, True), (3, False)):
        write_run(tmp_path, f"s{seed}", np.full(N, right), seed=seed, dev_acc=0.5)
    row = cell(write_report(tmp_path, echo=False)["table"], "finetune", 4)
    assert row.acc_mean == 0.5 and row.ci_low <= 0.25 and row.ci_high >= 0.75


def test_selection_regret_reads_only_the_heldout_pool(tmp_path):
    heldout = {"0.001": np.arange(300) % 10 < 6, "0.003": np.arange(300) % 10 < 8}  # pool accuracy 0.6 / 0.8
    write_run(tmp_path, "prompt", coin(0.6, 99), method="prompt", k=0, heldout=np.arange(300) % 2 == 0)
    dev = {0: ("0.001", "0.003"), 1: ("0.003", "0.001"), 2: ("0.001", "0.003")}  # seed -> (dev winner, loser)
    for seed, (win, lose) in dev.items():
        for lr, d in ((win, 0.75), (lose, 0.5)):
            write_run(tmp_path, f"lr={lr},seed={seed}", coin(0.7, seed), seed=seed, dev_acc=d, heldout=heldout[lr],
                      overrides={"optimizer.lr": lr})
    first = write_report(tmp_path, echo=False)
    row = cell(first["table"], "finetune", 4)
    # seeds 0 and 2 chose 0.001 (0.2 below the pool's best), seed 1 chose the best
    assert row.regret == pytest.approx(0.4 / 3) and row.heldout_n == 300
    assert 0 <= row.regret_low < row.regret < row.regret_high
    assert "## Selection regret" in first["md"].read_text()
    # Test labels and predictions, and dev rows, are not what the regret reads
    for run in tmp_path.glob("*/predictions.jsonl"):
        rows = [json.loads(line) for line in run.read_text().splitlines()]
        for r in rows:
            if r["split"] in ("test", "dev"):
                r["label"] = 1 - r["label"]
        run.write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics = json.loads((run.parent / "metrics.json").read_text())
        metrics["test_acc"] = float(np.mean([r["label"] == r["prediction"] for r in rows if r["split"] == "test"]))
        (run.parent / "metrics.json").write_text(json.dumps(metrics))
    after = cell(write_report(tmp_path, echo=False)["table"], "finetune", 4)
    assert after.regret == pytest.approx(row.regret) and after.acc_mean != pytest.approx(row.acc_mean)


def test_no_training_is_left_out_without_the_k0_run_and_the_report_says_so(tmp_path):
    for lr, dev in (("0.001", 0.6), ("0.003", 0.65)):
        write_run(tmp_path, f"lr={lr}", coin(0.9, 0), method="prompt_probe", dev_acc=dev, dev_acc_start=0.9,
                  overrides={"optimizer.lr": lr})
    report = write_report(tmp_path, echo=False)
    assert cell(report["table"], "prompt_probe", 4).selected == "seed 0: optimizer.lr=0.003"
    md = report["md"].read_text()
    assert md.count('no "no training" candidate for prompt_probe') == 1


def test_cis_are_deterministic_and_comparisons_paired(tmp_path):
    write_run(tmp_path, "prompt", coin(0.5, 7), method="prompt", k=0)
    for seed in (0, 1, 2):
        same = coin(0.8, seed)
        write_run(tmp_path, f"finetune-{seed}", same, seed=seed, dev_acc=0.5)
        write_run(tmp_path, f"lora-{seed}", same, method="lora", seed=seed, dev_acc=0.5)
        write_run(tmp_path, f"probe-{seed}", np.ones(N), method="linear_probe", k=16, seed=seed, dev_acc=0.5)
    first = write_report(tmp_path, echo=False)
    csvs = [(tmp_path / name).read_bytes() for name in ("report.csv", "comparisons.csv")]
    write_report(tmp_path, echo=False)
    assert [(tmp_path / name).read_bytes() for name in ("report.csv", "comparisons.csv")] == csvs

    table = first["table"]
    perfect = cell(table, "linear_probe", 16)
    assert perfect.acc_mean == perfect.ci_low == perfect.ci_high == 1.0
    lora = cell(table, "lora", 4)
    assert lora.ci_low < lora.acc_mean < lora.ci_high

    compared = first["comparisons"].set_index(["method", "versus"])
    # finetune and lora made the same predictions: paired, their difference is exactly 0
    same = compared.loc[("lora", "best other row")]
    assert same.other == "finetune" and same["diff"] == same.ci_low == same.ci_high == 0.0 and not same.excludes_zero
    gain = compared.loc[("linear_probe", "zero-shot prompt")]
    assert gain.other == "prompt" and gain.n == 3
    assert gain["diff"] == pytest.approx(1 - coin(0.5, 7).mean())
    assert 0 < gain.ci_low < gain["diff"] < gain.ci_high and gain.excludes_zero
    assert f"{gain['diff']:+.3f} [{gain.ci_low:+.3f}, {gain.ci_high:+.3f}] *" in first["md"].read_text()
    assert len(pd.read_csv(tmp_path / "comparisons.csv")) == 5  # k=16 has no other row to compare with


def test_ci_of_one_run_is_the_binomial_interval(tmp_path):
    write_run(tmp_path, "prompt", np.arange(400) % 2 == 0, method="prompt", k=0)  # 400 examples, half correct
    row = cell(write_report(tmp_path, echo=False)["table"], "prompt", 0)
    half_width = 1.96 * np.sqrt(0.5 * 0.5 / 400)  # 0.049
    assert row.ci_low == pytest.approx(0.5 - half_width, abs=0.01)
    assert row.ci_high == pytest.approx(0.5 + half_width, abs=0.01)


def test_old_runs_without_predictions_get_mean_and_std_only(tmp_path):
    accs = []
    for seed in (0, 1):
        accs.append(write_run(tmp_path, f"r{seed}", coin(0.7, seed), seed=seed, dev_acc=0.5,
                              predictions=seed == 0)["test_acc"])
    report = write_report(tmp_path, echo=False)
    row = cell(report["table"], "finetune", 4)
    assert row.acc_mean == pytest.approx(np.mean(accs)) and pd.isna(row.ci_low) and pd.isna(row.ci_high)
    assert "No CI for finetune at few (k=4): a selected run has no predictions.jsonl" in report["md"].read_text()


def test_runs_of_one_cell_must_score_the_same_test_examples(tmp_path):
    write_run(tmp_path, "a", coin(0.7, 0), seed=0, dev_acc=0.5)
    write_run(tmp_path, "b", coin(0.7, 1)[:150], seed=1, dev_acc=0.5)
    with pytest.raises(ValueError, match="different test examples"):
        write_report(tmp_path, echo=False)


def test_skips_are_grouped_by_reason_and_failures_listed(tmp_path):
    write_run(tmp_path, "ok", coin(0.7, 0), dev_acc=0.5)
    reasons = ["finetune trains, and k=0 gives it nothing to train on"] * 3 + ["does not depend on the split seed"]
    for i, reason in enumerate(reasons):
        (tmp_path / f"skip{i}" / ".hydra").mkdir(parents=True)
        (tmp_path / f"skip{i}" / "metrics.json").write_text(json.dumps({"status": "skipped", "reason": reason}))
    (tmp_path / "broken" / ".hydra").mkdir(parents=True)
    (tmp_path / "broken" / "metrics.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    (tmp_path / "killed" / ".hydra").mkdir(parents=True)

    lines = write_report(tmp_path, echo=False)["md"].read_text().split("## Not in the table\n\n")[1].splitlines()
    assert lines == [
        "- 1 run skipped: does not depend on the split seed",
        "- 3 runs skipped: finetune trains, and k=0 gives it nothing to train on",
        "- broken: failed — RuntimeError: boom",
        "- killed: missing — no metrics.json (killed or still running)",
    ]


def test_report_md_states_selection_comparisons_and_label_budget(tmp_path):
    lr_sweep(tmp_path)
    write_run(tmp_path, "full", coin(0.9, 5), method="linear_probe", k=None, dev_acc=0.9)
    md = write_report(tmp_path, echo=False)["md"].read_text()
    for section in ("## Comparisons", "## Selection", "## Label budget"):
        assert section in md
    assert '"no training" first' in md and "Test labels are read only to score the selected runs" in md
    budget = md.split("## Label budget")[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in budget.splitlines() if line.startswith("| ")}
    assert rows["zero"] == ["0", "0", "0"]
    assert rows["few (k=4)"] == ["8", "8", "16"]
    assert rows["full"] == ["500", "500", "1000"]


def test_log_report_sends_what_report_md_shows_to_wandb(tmp_path, monkeypatch):
    lr_sweep(tmp_path)
    report = write_report(tmp_path, echo=False)
    logged = {}

    class Run:
        def log(self, data):
            logged.update(data)

        def finish(self):
            logged["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: Run(), Table=lambda dataframe: dataframe, Image=lambda path: path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    from shotlab.tracking import log_report

    log_report({"project": "p", "group": "g"}, tmp_path, report)
    assert logged.pop("finished") and logged.pop("report/plot") == str(tmp_path / "report.png")
    assert set(logged) == {"report/table", "report/recipe", "report/regret", "report/comparisons", "report/selection"}
    assert set(logged["report/recipe"].method) == {"finetune · recipe (optimizer.lr=0.001)",
                                                   "finetune · recipe (optimizer.lr=0.003)"}
    assert list(logged["report/regret"].method) == ["finetune"] and "regret" in logged["report/regret"]
    table = logged["report/table"]
    assert {"ci_low", "ci_high", "selected"} <= set(table.columns)
    empty = table.map(lambda v: v is pd.NA or (isinstance(v, float) and np.isnan(v)))
    assert not empty.any().any()  # W&B tables take None, not pandas' NA or NaN, for an empty cell
    assert len(logged["report/comparisons"]) == len(report["comparisons"]) > 0
    assert len(logged["report/selection"]) == 1
    # a sweep with eval tasks also logs the out-of-domain table and its comparisons
    logged.clear()
    write_run(tmp_path, "ood-prompt", coin(0.6, 5), method="prompt", k=0, seed=1, evals={"news": coin(0.7, 6)})
    report = write_report(tmp_path, echo=False)
    log_report({"project": "p", "group": "g"}, tmp_path, report)
    assert list(logged["report/ood"].eval_task) == ["news"] and len(logged["report/ood_comparisons"]) == 0
    # a sweep over prompts also logs the across-prompt table and its comparisons
    logged.clear()
    sweep = tmp_path / "prompts"
    prompt_sweep(sweep, {"one": 0.7, "two": 0.8}, {(p, s): 0.5 for p in ("one", "two") for s in range(3)})
    report = write_report(sweep, echo=False)
    log_report({"project": "p", "group": "g"}, sweep, report)
    assert set(logged["report/prompts"].method) == {"finetune", "prompt"}
    assert list(logged["report/prompt_comparisons"].versus) == ["zero-shot prompt"]


def test_out_of_domain_rows_are_the_same_choices_scored_on_the_eval_tasks(tmp_path):
    # finetune at k=4, 3 seeds x 2 learning rates; dev picks 0.001 on seeds 0 and 2, 0.003 on seed 1.
    # Out of domain the loser would be better: the table must still show the dev sample's choices.
    ood_p = {"0.001": 0.55, "0.003": 0.9}
    write_run(tmp_path, "prompt", coin(0.6, 99), method="prompt", k=0, evals={"news": coin(0.7, 98)})
    dev = {(0, "0.001"): 0.75, (0, "0.003"): 0.5, (1, "0.001"): 0.5, (1, "0.003"): 0.625,
           (2, "0.001"): 0.875, (2, "0.003"): 0.75}
    ood = {key: coin(ood_p[key[1]], 7 * key[0] + len(key[1])) for key in dev}
    for (seed, lr), d in dev.items():
        write_run(tmp_path, f"lr={lr},seed={seed}", coin(0.7, seed), seed=seed, dev_acc=d,
                  overrides={"optimizer.lr": lr}, evals={"news": ood[(seed, lr)]})
    report = write_report(tmp_path, echo=False)
    chosen = [ood[(0, "0.001")], ood[(1, "0.003")], ood[(2, "0.001")]]
    row = cell(report["ood"][report["ood"].kind == "selected"], "finetune", 4)
    assert row.acc_mean == pytest.approx(np.mean([c.mean() for c in chosen])) and row.eval_task == "news"
    assert row.ci_low < row.acc_mean < row.ci_high
    assert cell(report["ood"], "prompt", 0).acc_mean == pytest.approx(coin(0.7, 98).mean())
    versus = report["ood_comparisons"]
    zero = versus[(versus.method == "finetune") & (versus.versus == "zero-shot prompt")].iloc[0]
    assert zero["diff"] == pytest.approx(np.mean([c.mean() for c in chosen]) - coin(0.7, 98).mean())
    md = (tmp_path / "report.md").read_text()
    assert "## Out of domain" in md and "### news" in md
    assert pd.read_csv(tmp_path / "report_ood.csv").eval_task.unique().tolist() == ["news"]
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "report.png").shape[1] == 120 * (10 + 4.5)  # a panel for news
    # in domain nothing changed
    assert cell(report["table"][report["table"].kind == "selected"], "finetune", 4).acc_mean == pytest.approx(
        np.mean([coin(0.7, s).mean() for s in range(3)]))


def test_a_sweep_over_prompts_has_a_row_per_prompt_compared_on_its_own_prompt(tmp_path):
    for prompt, p in (("default", 0.6), ("it_was", 0.8)):
        write_run(tmp_path, f"prompt-{prompt}", coin(p, 1), method="prompt", k=0, prompt=prompt)
        for seed in range(3):
            write_run(tmp_path, f"ft-{prompt}-{seed}", coin(p + 0.1, seed), seed=seed, dev_acc=0.5, prompt=prompt,
                      overrides={"task.prompt": prompt})
    report = write_report(tmp_path, echo=False)
    assert set(report["table"].method) == {"prompt · prompt default", "prompt · prompt it_was",
                                           "finetune · prompt default", "finetune · prompt it_was"}
    versus = report["comparisons"]
    zero = versus[versus.versus == "zero-shot prompt"].set_index("method")
    assert zero.loc["finetune · prompt it_was", "other"] == "prompt · prompt it_was"
    assert zero.loc["finetune · prompt default", "other"] == "prompt · prompt default"
    # the other prompt's finetune is not a peer of this prompt's: nothing else runs at k=4 on it
    assert versus[versus.versus == "best other row"].empty
    assert "prompt" not in set(report["selection"]["hyper-parameter"])  # a prompt is a row, not a candidate


def prompt_sweep(sweep: Path, test_p: dict[str, float], dev: dict[tuple[str, int], float]) -> dict:
    """finetune at k=4 on two prompts over 3 split seeds, and the zero-shot prompt on each; returns
    the test correctness written, by (prompt, seed), seed None for zero-shot."""
    written = {}
    for prompt, p in test_p.items():
        written[(prompt, None)] = coin(p - 0.1, len(prompt))
        write_run(sweep, f"prompt-{prompt}", written[(prompt, None)], method="prompt", k=0, prompt=prompt,
                  overrides={"task.prompt": prompt})
        for seed in range(3):
            written[(prompt, seed)] = coin(p, 10 * seed + len(prompt))
            write_run(sweep, f"ft-{prompt}-{seed}", written[(prompt, seed)], seed=seed, dev_acc=dev[(prompt, seed)],
                      prompt=prompt, overrides={"task.prompt": prompt})
    return written


def test_across_prompts_the_ci_covers_prompts_and_the_dev_sample_picks_one(tmp_path):
    # The prompts disagree (0.9 against 0.5 on test); the dev sample prefers the worse prompt on seed 1.
    dev = {("good", 0): 0.75, ("good", 1): 0.5, ("good", 2): 0.875, ("weak", 0): 0.5, ("weak", 1): 0.625,
           ("weak", 2): 0.5}
    written = prompt_sweep(tmp_path, {"good": 0.9, "weak": 0.5}, dev)
    report = write_report(tmp_path, echo=False)
    across = report["prompts"].set_index("method")
    ft, zero = across.loc["finetune"], across.loc["prompt"]
    ft_runs = np.stack([[written[(p, s)] for s in range(3)] for p in ("good", "weak")])  # (P, S, N)
    assert ft.prompts == 2 and ft.n == 3 and ft.acc_mean == pytest.approx(ft_runs.mean())
    per_prompt = ft_runs.mean(axis=(1, 2))
    assert (ft.best_prompt, ft.worst_prompt) == ("good", "weak")
    assert ft.spread == pytest.approx(per_prompt[0] - per_prompt[1]) and ft.spread > 0.3
    assert ft.se_prompt == pytest.approx(ft.spread / 2 / np.sqrt(2))  # two prompts: |a - b| / (2 sqrt 2)
    assert ft.se_prompt > ft.se_seed and ft.se_prompt > ft.se_example
    # Resampling prompts widens the CI beyond either prompt's own (seeds and examples only).
    width = ft.ci_high - ft.ci_low
    for prompt in ("good", "weak"):
        alone = cell(report["table"], f"finetune · prompt {prompt}", 4)
        assert width > 2 * (alone.ci_high - alone.ci_low)
    assert ft.ci_low < ft.acc_mean < ft.ci_high
    # Chosen on dev: good on seeds 0 and 2, weak on seed 1 (its better dev accuracy), scored on test.
    assert ft.dev_chosen == "seed 0: good; seed 1: weak; seed 2: good"
    chosen = np.stack([written[("good", 0)], written[("weak", 1)], written[("good", 2)]])
    assert ft.dev_chosen_acc == pytest.approx(chosen.mean()) and ft.dev_chosen_low < ft.dev_chosen_acc
    assert np.isnan(zero.dev_chosen_acc) and zero.n == 1  # zero-shot: no dev sample chooses its prompt
    # Compared with zero-shot on the same prompts, seeds (zero-shot stands for each) and examples.
    versus = report["prompt_comparisons"]
    row = versus[(versus.method == "finetune") & (versus.versus == "zero-shot prompt")].iloc[0]
    zero_runs = np.stack([[written[(p, None)]] * 3 for p in ("good", "weak")])
    assert row["diff"] == pytest.approx((ft_runs.astype(float) - zero_runs).mean()) and row.prompts == 2
    md = (tmp_path / "report.md").read_text()
    assert "## Across prompts" in md and "0.3" in md and "– (no dev sample)" in md
    assert pd.read_csv(tmp_path / "report_prompts.csv").method.tolist() == ["finetune", "prompt"]
    assert len(pd.read_csv(tmp_path / "comparisons_prompts.csv")) == 1


def test_across_prompts_agreeing_prompts_add_little_to_the_ci(tmp_path):
    dev = {(p, s): 0.5 for p in ("one", "two") for s in range(3)}
    prompt_sweep(tmp_path, {"one": 0.7, "two": 0.7}, dev)  # same accuracy, different examples right
    ft = write_report(tmp_path, echo=False)["prompts"].set_index("method").loc["finetune"]
    assert ft.spread < 0.05 and ft.se_prompt < ft.se_example
    # a sweep with one prompt has no across-prompt table
    report = write_report(tmp_path / "ft-one-0", echo=False)
    assert report["prompts"] is None and not (tmp_path / "ft-one-0" / "report_prompts.csv").exists()


def test_across_prompts_k0_runs_that_are_the_zero_shot_prompt_share_its_line(tmp_path):
    dev = {(p, s): 0.5 for p in ("one", "two") for s in range(3)}
    written = prompt_sweep(tmp_path, {"one": 0.7, "two": 0.8}, dev)
    for prompt in ("one", "two"):  # prompt_probe's k=0 runs: the zero-shot prompt's predictions
        write_run(tmp_path, f"probe-{prompt}", written[(prompt, None)], method="prompt_probe", k=0, prompt=prompt,
                  overrides={"task.prompt": prompt})
    report = write_report(tmp_path, echo=False)
    across = report["prompts"]
    assert across.method.tolist() == ["finetune", "prompt, prompt_probe"]
    versus = report["prompt_comparisons"]
    assert versus[versus.versus == "zero-shot prompt"].other.tolist() == ["prompt"]
    assert "prompt, prompt_probe" in (tmp_path / "report.md").read_text()
    # a k=0 run that differs on one example keeps its own line
    changed = written[("two", None)].copy()
    changed[0] = not changed[0]
    shutil.rmtree(tmp_path / "probe-two")
    write_run(tmp_path, "probe-two", changed, method="prompt_probe", k=0, prompt="two",
              overrides={"task.prompt": "two"})
    assert write_report(tmp_path, echo=False)["prompts"].method.tolist() == ["finetune", "prompt", "prompt_probe"]
