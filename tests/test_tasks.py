"""Built-in tasks have their documented sizes; a user's bad data fails in one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from shotlab import ShotlabError
from shotlab.data.tasks import load_task
from tests.conftest import CONF

# The sizes README.md documents (python -m shotlab.describe prints them).
SIZES = {
    "movie_sentiment": {"train": [4261, 4193], "validation": [532, 524], "test": [532, 524]},
    "review_domain": {
        "train": [8483, 3360, 2957, 4095], "validation": [1060, 420, 370, 512], "test": [1060, 420, 370, 512]
    },
    "rt_review_or_plot": {"train": [5894, 4308, 867], "validation": [737, 538, 108], "test": [737, 538, 108]},
    # out of domain for movie_sentiment: the same labels (negative, positive)
    "product_sentiment": {"train": [1038, 1475], "validation": [130, 184], "test": [130, 184]},
    "tweet_sentiment": {"train": [924, 2085], "validation": [115, 260], "test": [115, 260]},
    "news_sentiment": {"train": [1681, 1200], "validation": [210, 150], "test": [210, 150]},
}


def task_cfg(name: str, **changes) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / f"{name}.yaml"))
    if cfg.get("name") == "${.path}":
        cfg["name"] = name
    return {**cfg, **changes}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_task_sizes_and_splits(name):
    task = load_task(task_cfg(name))
    for split, counts in SIZES[name].items():
        assert task.split(split).class_counts(task.num_classes) == counts
    ids = [set(task.split(s).ids) for s in ("train", "validation", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])  # no example in two splits
    texts = [set(task.split(s).texts) for s in ("train", "test")]
    assert not texts[0] & texts[1]  # no sentence leaks from train into test
    assert all(t.strip() for t in task.test.texts)


def test_splits_are_deterministic_and_test_subset_is_a_prefix():
    a = load_task(task_cfg("movie_sentiment"))
    b = load_task(task_cfg("movie_sentiment", test_size=100))
    assert b.test.ids == a.test.ids[:100]
    assert load_task(task_cfg("movie_sentiment")).train.ids == a.train.ids


def test_movie_sentiment_labels_follow_the_score_sign():
    task = load_task(task_cfg("movie_sentiment"))
    text = dict(zip(task.train.texts, task.train.labels))
    # Sentence 1 of the corpus has mean score +2.27, sentence 3 has -0.6.
    first = "The Rock is destined to be the 21st Century's new ''Conan''"
    pos = [y for t, y in text.items() if t.startswith(first)]
    neg = [y for t, y in text.items() if t == "Effective but too tepid biopic"]
    assert (pos or neg) and all(y == 1 for y in pos) and all(y == 0 for y in neg)


@pytest.mark.parametrize("name", ["product_sentiment", "tweet_sentiment", "news_sentiment"])
def test_out_of_domain_tasks_share_movie_sentiments_labels_and_describe_lists_them(name, capsys):
    from shotlab.describe import main

    task = load_task(task_cfg(name))
    assert task.label_names == load_task(task_cfg("movie_sentiment")).label_names
    assert all(i.startswith(name.split("_")[0] + ":") for i in task.test.ids)
    main([])  # every built-in task, its splits and class sizes
    shown = capsys.readouterr().out
    assert f"{name}: 2 classes" in shown and f"| test | {' | '.join(map(str, SIZES[name]['test']))} |" in shown


def test_a_rated_snippet_keeps_its_sign_only_where_the_raters_agree():
    from shotlab.data.tasks import _rated_sentiment

    rows = {rid: label for rid, _, label in _rated_sentiment("nytEditorialSnippets", "news")}
    # Snippet 1_1: mean 0.4 of 20 ratings, std 0.73 (2 SE = 0.33): kept, positive. Snippet 1_2: mean
    # 0.15, std 0.36 (2 SE = 0.16): the raters do not agree on a sign, dropped.
    assert rows["news:1_1"] == "positive" and "news:1_2" not in rows


def write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_user_csv_and_jsonl_load(tmp_path):
    rows = [f"text number {i},{'ab'[i % 2]}" for i in range(40)]
    task = load_task(task_cfg("csv", files={"train": write_csv(tmp_path / "t.csv", rows)}))
    assert task.label_names == ("a", "b") and len(task.train) + len(task.validation) + len(task.test) == 40
    lines = [json.dumps({"sentence": f"line {i}", "y": "xyz"[i % 3]}) for i in range(30)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines))
    task = load_task(task_cfg("jsonl", files={"train": str(tmp_path / "t.jsonl")}, text_column="sentence", label_column="y"))
    assert task.num_classes == 3 and task.verbalizer == (("x",), ("y",), ("z",))


@pytest.mark.parametrize(
    ("rows", "changes", "message"),
    [
        (None, {"files": {"train": "/nonexistent/train.csv"}}, "data file /nonexistent/train.csv does not exist"),
        (["a,b"] * 4, {"text_column": "review"}, "has no column 'review'"),
        ([f"t{i},{'ab'[i % 2]}" for i in range(6)] + ["t9,c"], {"label_names": ["a", "b"]},
         "has label 'c', not one of task.label_names"),
        ([f"t{i},{'ab'[i % 2]}" for i in range(6)] + ['"  ",a'], {}, "has an empty text"),
        ([f"t{i},a" for i in range(6)], {}, "needs at least two classes"),
        ([f"t{i},{'ab'[i % 2]}" for i in range(6)], {"verbalizer": {"a": ["x"]}}, "task.verbalizer has keys"),
        ([f"t{i},{'ab'[i % 2]}" for i in range(6)], {"template": "no field"}, "must contain {text}"),
    ],
)
def test_bad_user_data_gives_one_line(tmp_path, rows, changes, message):
    cfg = task_cfg("csv", files={"train": write_csv(tmp_path / "d.csv", rows) if rows else None})
    cfg.update(changes)
    with pytest.raises(ShotlabError, match=message) as err:
        load_task(cfg)
    assert "\n" not in str(err.value)


def test_unknown_builtin_task():
    with pytest.raises(ShotlabError, match="unknown built-in task 'imdb'"):
        load_task({"name": "imdb", "source": "builtin"})


def test_labels_are_int_indices_in_label_name_order(tmp_path):
    rows = [f"t{i},{'ba'[i % 2]}" for i in range(20)]
    task = load_task(task_cfg("csv", files={"train": write_csv(tmp_path / "o.csv", rows)}, label_names=["b", "a"]))
    assert task.label_names == ("b", "a")
    assert task.train.labels.dtype == np.int64


def test_hf_source_reads_a_dataset_folder_and_keeps_classlabel_order(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, n in (("train", 30), ("test", 10)):
        rows = {"text": [f"{split} text {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "data" / f"{split}.parquet"))
    task = load_task({**task_cfg("hf"), "name": "local", "path": str(tmp_path / "data")})
    assert task.label_names == ("neg", "pos")  # the dataset's ClassLabel order, not sorted strings
    assert len(task.test) == 10 and len(task.train) + len(task.validation) == 30


def test_hf_dataset_that_cannot_be_loaded_says_so(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ShotlabError, match="cannot load Hugging Face dataset 'no-such/dataset'"):
        load_task({**task_cfg("hf"), "name": "x", "path": "no-such/dataset"})


# --- prompts -------------------------------------------------------------------------------

BUILTIN = ["movie_sentiment", "review_domain", "rt_review_or_plot", "product_sentiment", "tweet_sentiment",
           "news_sentiment"]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_task_ships_four_hand_written_prompts_that_load(name):
    from shotlab.data.tasks import choose_prompt

    cfg = task_cfg(name)
    assert len(cfg["prompts"]) >= 4
    seen = {choose_prompt(cfg)[1:2]}
    for prompt in cfg["prompts"]:
        task = load_task(task_cfg(name, prompt=prompt, test_size=5))
        assert task.prompt == prompt and "{text}" in task.template and len(task.verbalizer) == task.num_classes
        seen.add((task.template,))
    assert len(seen) == len(cfg["prompts"]) + 1  # each its own template


def test_format_variants_are_seeded_meaning_preserving_changes_of_the_template():
    from shotlab.data.tasks import format_variant

    base = "Review: {text}\nSentiment:"
    variants = [format_variant(base, i) for i in range(1, 9)]
    assert variants == [format_variant(base, i, seed=0) for i in range(1, 9)]  # same seed, same variants
    assert variants != [format_variant(base, i, seed=1) for i in range(1, 9)]
    assert format_variant(base, 0) == base and len(set(variants)) >= 6
    for v in variants:
        assert v.count("{text}") == 1 and v != base
        head, tail = v.split("{text}")
        assert head.lower().rstrip(" :-=") in ("text", "input", "passage", "sentence", "review")
        assert tail.strip().lower().rstrip(" :-=") == "sentiment"  # the closing field keeps its name
    # the task config picks one by name; the verbalizer stays the task's
    task = load_task(task_cfg("movie_sentiment", prompt="format-3", test_size=5))
    assert task.template == variants[2] and task.verbalizer == (("negative",), ("positive",))


def test_an_unknown_prompt_is_one_line_naming_the_choices():
    with pytest.raises(ShotlabError, match=r"no prompt 'nope'; choose one of \['default', 'question'.*'format-<i>'\]"):
        load_task(task_cfg("movie_sentiment", prompt="nope"))
