"""Out-of-domain test sets (`eval_tasks`): the run's final classifier scores another task's test
split with the training task's prompt, writes its rows and metrics, and refuses other labels."""

from __future__ import annotations

import json

import pytest

from shotlab import ShotlabError
from shotlab.train import run
from tests.conftest import make_cfg


def rows(run_dir, split: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "predictions.jsonl").read_text().splitlines()) if r["split"] == split]


def scores(split_rows: list[dict]) -> list[float]:
    return [s for r in split_rows for s in r["scores"]]


def test_an_eval_task_is_scored_with_the_training_tasks_prompt(tmp_path):
    zero = ["method=prompt", "regime=zero", "heldout_size=0"]
    trained_on_movies = run(make_cfg(tmp_path / "a", *zero, "eval_tasks=[tweet_sentiment]"))
    # The same classifier on the same texts: tweet_sentiment's test split read through the movie prompt.
    movie_prompt = "Review: {text}\nSentiment:"
    cfg = make_cfg(tmp_path / "b", *zero, "task=tweet_sentiment", "task.test_size=null")
    cfg.task.template = movie_prompt
    direct = run(cfg)
    run(make_cfg(tmp_path / "c", *zero, "task=tweet_sentiment", "task.test_size=null"))  # its own prompt
    ours, theirs, own = rows(tmp_path / "a", "eval:tweet_sentiment"), rows(tmp_path / "b", "test"), rows(tmp_path / "c", "test")
    assert [r["id"] for r in ours] == [r["id"] for r in theirs] and len(ours) == 375
    assert scores(ours) == pytest.approx(scores(theirs), abs=1e-4)
    assert scores(own) != pytest.approx(scores(theirs), abs=1e-4)  # the prompt matters
    scored = trained_on_movies["eval"]["tweet_sentiment"]
    assert scored["test_acc"] == pytest.approx(direct["test_acc"]) and scored["num_test"] == 375
    assert trained_on_movies["test_acc"] == pytest.approx(
        sum(r["prediction"] == r["label"] for r in rows(tmp_path / "a", "test")) / 64)  # in domain as before


def test_a_trained_run_writes_each_eval_tasks_rows_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOTLAB_FEATURES", str(tmp_path / "features"))
    result = run(make_cfg(tmp_path, "method=linear_probe", "regime.k=2", "method.min_steps=2",
                          "eval_tasks=[product_sentiment,news_sentiment]"))
    for name, size in (("product_sentiment", 314), ("news_sentiment", 360)):
        scored, mine = result["eval"][name], rows(tmp_path, f"eval:{name}")
        assert len(mine) == scored["num_test"] == size
        assert scored["test_acc"] == pytest.approx(sum(r["prediction"] == r["label"] for r in mine) / size)
        assert sum(map(sum, scored["confusion"])) == size
    split = json.loads((tmp_path / "split.json").read_text())
    assert set(split["eval_hashes"]) == {"product_sentiment", "news_sentiment"}


def test_an_eval_task_with_other_labels_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    import shotlab.models.backbone

    def no_model(*_):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(shotlab.models.backbone, "build_backbone", no_model)
    cfg = make_cfg(tmp_path, "task=rt_review_or_plot", "method=prompt", "regime=zero", "eval_tasks=[product_sentiment]")
    with pytest.raises(ShotlabError, match=r"product_sentiment has labels \['negative', 'positive'\]") as err:
        run(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ShotlabError, match="no task config 'nope'"):
        run(make_cfg(tmp_path, "method=prompt", "regime=zero", "eval_tasks=[nope]"))
    with pytest.raises(ShotlabError, match="is the training task"):
        run(make_cfg(tmp_path, "method=prompt", "regime=zero", "eval_tasks=[movie_sentiment]"))


def test_eval_tasks_must_be_a_list_of_task_names(tmp_path):
    with pytest.raises(ShotlabError, match=r"eval_tasks must be a list of task config names"):
        run(make_cfg(tmp_path, "method=prompt", "regime=zero", "eval_tasks=product_sentiment"))
