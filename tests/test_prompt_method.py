"""method=prompt and method=prompt_finetune through run(): same metrics.json contract."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from shotlab.train import run
from tests.conftest import make_cfg


def test_prompt_finetune_at_k0_predicts_exactly_as_prompt(tmp_path):
    # movie_sentiment's label words (" negative", " positive") are single GPT-2 tokens.
    prompt = run(make_cfg(tmp_path / "p", "method=prompt", "regime=zero", "max_length=512"))
    assert prompt["status"] == "ok" and prompt["num_dev"] == 0  # zero-shot: no dev sample
    tuned = run(make_cfg(tmp_path / "f", "method=prompt_finetune", "regime=zero", "max_length=512"))
    assert prompt["status"] == tuned["status"] == "ok"
    assert tuned["confusion"] == prompt["confusion"] and tuned["test_acc"] == prompt["test_acc"]
    assert tuned["num_train"] == 0


def test_in_context_run_uses_the_k_shot_sample_as_demonstrations(tmp_path, tiny_backbone):
    import json

    from omegaconf import OmegaConf

    from shotlab.data.tasks import load_task
    from shotlab.models.scorer import LMScorer, demonstrations

    cfg = make_cfg(tmp_path, "method=prompt", "regime=few", "regime.k=2", "seed=3")
    result = run(cfg)
    assert result["status"] == "ok" and result["num_demonstrations"] == 4 and result["num_train"] == 4
    assert result["train_seconds"] == 0.0
    # Its predictions are the scorer's with split.json's examples shown in the seed's order.
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True))
    shown = json.loads((tmp_path / "split.json").read_text())["train_ids"]
    train = task.train.subset([task.train.ids.index(i) for i in shown])
    demos = demonstrations(train.texts, train.labels, task.template, task.verbalizer, seed=3)
    predicted = LMScorer(tiny_backbone, task.template, task.verbalizer).score(task.test.texts, demos).predictions
    assert result["test_acc"] == pytest.approx((predicted.numpy() == task.test.labels).mean())


@pytest.mark.parametrize(("overrides", "reason"), [
    (["method=prompt", "regime=zero", "seed=1"], "does not depend on the split seed"),
    (["method=prompt", "regime=full"], "all of them do not fit"),
    (["method=lora", "regime=zero"], "k=0 gives it nothing to train on"),
])
def test_cells_a_sweep_does_not_run(tmp_path, overrides, reason):
    result = run(make_cfg(tmp_path, *overrides))
    assert result["status"] == "skipped" and reason in result["reason"]


@pytest.mark.slow
def test_prompt_finetune_trains_from_the_zero_shot_head(tmp_path):
    import torch

    from tests.conftest import tiny

    result = run(make_cfg(tmp_path, "method=prompt_finetune", "regime=few", "regime.k=2",
                          "epochs=1", "validations=1", "regime.min_steps=3"))
    assert result["status"] == "ok" and result["num_train"] == 4
    # The head started as the output-embedding rows of " negative" / " positive" and moved.
    rows = tiny().lm.get_output_embeddings().weight[[4633, 3967]]
    trained = torch.load(result["best_checkpoint"], weights_only=False)["state_dict"]["head.proj.weight"]
    assert trained.shape == rows.shape and not torch.allclose(trained, rows)
    assert torch.allclose(trained, rows, atol=0.1)  # a few small steps from there, not a new layer


def _predictions(run_dir, split="test"):
    import json

    return [r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines()) if r["split"] == split]


def test_prompt_probe_at_k0_predicts_exactly_as_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOTLAB_FEATURES", str(tmp_path / "features"))
    prompt = run(make_cfg(tmp_path / "p", "method=prompt", "regime=zero", "max_length=512"))
    assert prompt["status"] == "ok" and prompt["num_dev"] == 0  # zero-shot: no dev sample
    probe = run(make_cfg(tmp_path / "q", "method=prompt_probe", "regime=zero", "max_length=512"))
    assert probe["status"] == "ok" and probe["num_train"] == 0 and probe["train_steps"] == 0
    ours, theirs = _predictions(tmp_path / "q"), _predictions(tmp_path / "p")
    assert [r["prediction"] for r in ours] == [r["prediction"] for r in theirs]
    assert [r["id"] for r in ours] == [r["id"] for r in theirs]


@pytest.mark.parametrize("method", ["prompt", "prompt_probe", "linear_probe", "finetune"])
def test_predictions_file_gives_the_metrics(tmp_path, monkeypatch, method):
    monkeypatch.setenv("SHOTLAB_FEATURES", str(tmp_path / "features"))
    steps = ["regime.min_steps=2"] + (["method.min_steps=null"] if method != "prompt" else [])
    result = run(make_cfg(tmp_path, f"method={method}", "regime.k=2", *steps))
    test, dev = _predictions(tmp_path), _predictions(tmp_path, "dev")
    assert len(test) == result["num_test"] == 64 and len(dev) == result["num_dev"] == 4
    assert result["test_acc"] == pytest.approx(sum(r["prediction"] == r["label"] for r in test) / len(test))
    assert result["dev_acc"] == pytest.approx(sum(r["prediction"] == r["label"] for r in dev) / len(dev))
    assert all(r["prediction"] == max(range(2), key=r["scores"].__getitem__) for r in test + dev)
    assert result["label_budget"] == result["num_train"] + result["num_dev"] == 8
    assert ("dev_acc_start" in result) == ("dev_logprob_start" in result) == (method == "prompt_probe")
    assert result["dev_logprob"] < 0
    # the validation split's held-out pool: scored by every run, never a dev example
    heldout = _predictions(tmp_path, "heldout")
    assert len(heldout) == result["num_heldout"] == 300
    assert not {r["id"] for r in heldout} & {r["id"] for r in dev}


def test_prompt_probe_learns_from_its_zero_shot_start(tmp_path, monkeypatch):
    import torch

    from tests.conftest import tiny

    monkeypatch.setenv("SHOTLAB_FEATURES", str(tmp_path / "features"))
    result = run(make_cfg(tmp_path, "method=prompt_probe", "regime.k=4", "method.min_steps=20"))
    assert result["status"] == "ok" and result["train_steps"] == 20 and 0 <= result["dev_acc_start"] <= 1
    rows = tiny().lm.get_output_embeddings().weight[[4633, 3967]]  # " negative", " positive"
    trained = torch.load(result["best_checkpoint"], weights_only=False)["state_dict"]["head.proj.weight"]
    assert not torch.allclose(trained, rows) and torch.allclose(trained, rows, atol=0.5)
    assert not any(k.startswith("backbone.") for k in torch.load(result["best_checkpoint"], weights_only=False)["state_dict"])


@pytest.mark.parametrize("method", ["prompt_probe", "prompt_finetune", "linear_probe"])
def test_prompt_methods_refuse_mean_pooling_before_any_model_loads(tmp_path, method):
    from shotlab import ShotlabError

    with pytest.raises(ShotlabError, match="pools the prompt's last token; set backbone.pooling=last"):
        run(make_cfg(tmp_path, f"method={method}", "backbone.pooling=mean", "regime.k=2"))
    assert not (tmp_path / "split.json").exists()
    # the raw-text probe may pool the mean
    assert run(make_cfg(tmp_path / "raw", "method=linear_probe", "method.prompt=false", "backbone.pooling=mean",
                        "regime.k=2", "method.min_steps=2", "regime.min_steps=2"))["status"] == "ok"


def test_a_run_reads_the_prompt_it_is_given_and_writes_it_down(tmp_path):
    import json

    from shotlab.data.tasks import format_variant

    zero = ["method=prompt", "regime=zero", "heldout_size=0"]
    default = run(make_cfg(tmp_path / "d", *zero))
    variant = run(make_cfg(tmp_path / "v", *zero, "task.prompt=format-2"))
    named = run(make_cfg(tmp_path / "n", *zero, "task.prompt=it_was"))
    assert (default["prompt"], variant["prompt"], named["prompt"]) == ("default", "format-2", "it_was")
    written = {d: json.loads((tmp_path / d / "prompt.json").read_text()) for d in "dvn"}
    assert written["d"]["template"] == "Review: {text}\nSentiment:"
    assert written["v"]["template"] == format_variant("Review: {text}\nSentiment:", 2)
    assert written["n"] == {"name": "it_was", "template": "{text} It was",
                            "verbalizer": {"negative": ["bad"], "positive": ["good"]}}
    scores = {d: [r["scores"] for r in _predictions(tmp_path / d)] for d in "dvn"}
    assert scores["d"] != scores["v"] and scores["d"] != scores["n"]  # another prompt, another classifier
    assert default["config_hash"] != variant["config_hash"]


def test_bf16_scoring_agrees_with_fp32_within_its_tolerance(tmp_path):
    """backbone.dtype=bfloat16 scores the whole run in bf16 (what a GPU run does by default): the
    label scores stay within BF16_SCORE_TOLERANCE of fp32's, and so do the predictions but where
    the two labels were closer than that."""
    from shotlab.models.backbone import BF16_SCORE_TOLERANCE

    runs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        run(make_cfg(out, "method=prompt", "regime=zero", "task.test_size=64", f"backbone.dtype={dtype}"))
        runs[dtype] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    fp32 = torch.tensor([r["scores"] for r in runs["float32"]])
    bf16 = torch.tensor([r["scores"] for r in runs["bfloat16"]])
    assert not torch.equal(fp32, bf16)  # it did run in bf16
    assert (fp32 - bf16).abs().max() <= BF16_SCORE_TOLERANCE
    margin = (fp32[:, 0] - fp32[:, 1]).abs()
    differ = fp32.argmax(-1) != bf16.argmax(-1)
    assert (margin[differ] <= 2 * BF16_SCORE_TOLERANCE).all()


def test_many_shot_keeps_the_demonstrations_that_fit_the_context_and_says_so(tmp_path, capfd):
    """method=prompt at a k whose demonstrations overflow the context (tiny-gpt2: 512 positions):
    the run keeps as many as fit (the latest shown), records how many, and says so in one line."""
    result = run(make_cfg(tmp_path, "method=prompt", "regime=few", "regime.k=32", "task.test_size=8"))
    kept = result["num_demonstrations"]
    assert 0 < kept < 64
    lines = [line for line in capfd.readouterr().err.splitlines() if "demonstrations fit" in line]
    assert lines == [f"shotlab: {kept} of 64 demonstrations fit the backbone's context of 512 tokens with the "
                     "longest test prompt; the first {} shown are left out".format(64 - kept)]


def test_nearest_demonstrations_are_deterministic_recorded_and_scored_as_one_full_prompt(tmp_path):
    """method.demonstrations=nearest: per example, the sample ordered by feature similarity, most
    similar last; the same run twice gives the same demonstrations, predictions.jsonl names them,
    and each example's scores are those of its own whole prompt."""
    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import load_task
    from shotlab.models.scorer import naive_scores
    from tests.conftest import tiny

    rows = {}
    for attempt in ("a", "b"):
        cfg = make_cfg(tmp_path / attempt, "method=prompt", "regime.k=2", "task.test_size=6", "heldout_size=0",
                       "method.demonstrations=nearest", "method.num_nearest=3")
        result = run(cfg)
        assert result["demonstrations"] == "nearest" and result["method_label"] == "prompt (nearest)"
        rows[attempt] = [json.loads(line) for line in (tmp_path / attempt / "predictions.jsonl").read_text().splitlines()]
    assert rows["a"] == rows["b"]
    sample = draw_sample(load_task(OmegaConf.to_container(cfg.task, resolve=True)), 2, 0)
    by_id = dict(zip(sample.train.ids, zip(sample.train.texts, sample.train.labels)))
    test = [r for r in rows["a"] if r["split"] == "test"]
    assert all(len(r["demonstrations"]) == 3 and set(r["demonstrations"]) <= set(by_id) for r in test)
    assert len({tuple(r["demonstrations"]) for r in test}) > 1  # they depend on the example
    task = sample.task
    backbone = tiny().eval()
    # most similar last: cosine similarity of the pooled states of the raw texts
    from shotlab.data.batching import pad_right

    def pooled(texts):
        ids = backbone.tokenizer(list(texts), truncation=True, max_length=cfg.max_length).input_ids
        with torch.no_grad():
            return torch.nn.functional.normalize(backbone(*pad_right(ids, backbone.tokenizer.pad_token_id)), dim=-1)

    similarity = pooled(sample.test.texts) @ pooled(sample.train.texts).T
    position = {rid: i for i, rid in enumerate(sample.train.ids)}
    for r, row in zip(test, similarity):
        want = [sample.train.ids[i] for i in row.argsort(stable=True)[-3:].tolist()]
        assert [float(row[position[i]]) for i in r["demonstrations"]] == pytest.approx([float(row[position[i]]) for i in want], abs=1e-5)
    for r, text in zip(test, sample.test.texts):
        demos = [f"{task.template.format(text=by_id[i][0])} {task.verbalizer[int(by_id[i][1])][0]}"
                 for i in r["demonstrations"]]
        want = naive_scores(backbone, [text], task.template, task.verbalizer, demos)
        torch.testing.assert_close(torch.tensor([r["scores"]]), want, atol=1e-4, rtol=1e-4)


def test_nearest_demonstrations_refuse_calibration_in_one_line(tmp_path):
    from shotlab import ShotlabError

    with pytest.raises(ShotlabError, match="^method.demonstrations=nearest gives every example a prefix"):
        run(make_cfg(tmp_path, "method=prompt_calibrated", "regime.k=2", "method.demonstrations=nearest"))
