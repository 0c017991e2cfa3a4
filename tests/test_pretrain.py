"""Up-stream pre-training on the tiny GPT-2: held-out perplexity falls, the saved folder is a
backbone that classifies, a resumed run continues its step and schedule, a trained
tokenizer has the asked size and round-trips, and every corpus option composes."""

from __future__ import annotations

import json
import random

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shotlab import ShotlabError
from shotlab.pretrain import (
    check_pretrain_config,
    load_corpus,
    pack,
    pretrain,
    split_blocks,
    train_tokenizer,
)
from tests.conftest import CONF, make_cfg

TINY_PRETRAIN = [
    "backbone=tiny-gpt2", "logger=none", "trainer.enable_progress_bar=false",
    "block_size=32", "batch_size=8", "eval_batch_size=16", "holdout_fraction=0.1",
    "max_minutes=null", "max_steps=30", "val_every_n_steps=10",
    "optimizer.lr=1e-2", "optimizer.warmup_steps=2",
]


def make_pretrain_cfg(output_dir, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("pretrain", overrides=[*TINY_PRETRAIN, f"output_dir={output_dir}", *overrides])


@pytest.fixture
def corpus_file(tmp_path):
    """300 short lines from a small grammar: a tiny LM can learn their statistics fast."""
    rng = random.Random(0)
    subjects = ["the film", "this movie", "the plot", "the cast", "the ending"]
    verbs = ["was", "is", "seemed", "felt"]
    adjectives = ["good", "bad", "slow", "funny", "dull", "great"]
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} very {rng.choice(adjectives)} ." for _ in range(300)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_cfg(tmp_path, corpus_file, *overrides):
    return make_pretrain_cfg(tmp_path / "run", "corpus=text_files", f"corpus.files=[{corpus_file}]", *overrides)


@pytest.mark.parametrize("corpus", sorted(p.stem for p in (CONF / "corpus").glob("*.yaml")))
def test_pretrain_yaml_composes_with_every_corpus(tmp_path, corpus):
    cfg = make_pretrain_cfg(tmp_path, f"corpus={corpus}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    check_pretrain_config(cfg)
    assert cfg.corpus.source == corpus


def test_default_pretrain_config_is_the_documented_one(tmp_path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"output_dir={tmp_path}"])
    check_pretrain_config(cfg)
    assert (cfg.backbone.name, cfg.corpus.source, cfg.task.name) == ("gpt2-mini", "task", "review_domain")
    assert "movie_sentiment" in cfg.corpus.exclude_eval_of


@pytest.mark.slow
def test_perplexity_falls_and_the_saved_model_is_a_backbone_that_classifies(tmp_path, corpus_file, synthetic_csv):
    from shotlab.models.backbone import build_backbone
    from shotlab.models.causal_lm import mean_token_loss
    from shotlab.train import run

    result = pretrain(corpus_cfg(tmp_path, corpus_file))
    assert result["holdout_ppl_after"] < 0.1 * result["holdout_ppl_before"]
    assert result["steps"] == 30 and result["tokens_seen"] == 30 * 8 * 32
    written = json.loads((tmp_path / "run" / "pretrain_metrics.json").read_text())
    for key in ("holdout_ppl_before", "holdout_ppl_after", "steps", "tokens_seen", "train_seconds",
                "tokens_per_second", "parameters"):
        assert written[key] == result[key]

    # The folder alone rebuilds the trained model: same held-out loss, same hidden size.
    backbone = build_backbone({"name_or_path": str(tmp_path / "run" / "model")})
    assert backbone.hidden_size == 32
    _, holdout = split_blocks(pack(corpus_file.read_text().splitlines(), backbone.tokenizer, 32), 0.1)
    assert mean_token_loss(backbone.lm, holdout) == pytest.approx(result["holdout_loss_after"], rel=1e-4)
    batch = backbone.tokenizer(["the film was good", "bad"], return_tensors="pt", padding=True)
    assert backbone(batch["input_ids"], batch["attention_mask"]).shape == (2, 32)

    # ... and is a backbone like any other for `shotlab.train`.
    cfg = make_cfg(
        tmp_path / "cls", "backbone=hf", f"backbone.name_or_path={tmp_path / 'run' / 'model'}",
        "task=csv", f"task.files.train={synthetic_csv}", "regime=few", "regime.k=8", "regime.min_steps=5",
        "epochs=1", "validations=1",
    )
    classified = run(cfg)
    # The pre-trained folder is the backbone the run reports, and its numbers add up.
    confusion = classified["confusion"]
    assert classified["status"] == "ok" and classified["backbone"] == str(tmp_path / "run" / "model")
    assert sum(map(sum, confusion)) == classified["num_test"] and classified["num_train"] == 16
    assert classified["test_acc"] == pytest.approx(sum(confusion[i][i] for i in range(2)) / classified["num_test"])


@pytest.mark.slow
def test_resume_continues_the_step_optimizer_and_schedule(tmp_path, corpus_file):
    first = pretrain(corpus_cfg(tmp_path, corpus_file, "max_steps=6", "val_every_n_steps=3"))
    assert first["steps"] == 6
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = pretrain(corpus_cfg(tmp_path, corpus_file, "max_steps=12", "val_every_n_steps=3", f"ckpt_path={last}"))
    assert (resumed["steps"], resumed["steps_this_run"], resumed["tokens_seen"]) == (12, 6, 12 * 8 * 32)
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 12
    adam_steps = {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()}
    assert adam_steps == {12}  # AdamW's moments carried on; a restart would say 6
    scheduler = state["lr_schedulers"][0]
    assert scheduler["last_epoch"] == 12
    # Cosine over 12 steps ends at lr x min_lr_ratio = 1e-2 x 0.1.
    assert scheduler["_last_lr"][0] == pytest.approx(1e-3)


@pytest.mark.slow
def test_tokenizer_training_gives_the_asked_vocab_and_round_trips(tmp_path, corpus_file):
    from transformers import AutoConfig, AutoTokenizer

    lines = corpus_file.read_text().splitlines()
    tokenizer = train_tokenizer(lines, vocab_size=300)
    assert len(tokenizer) == 300
    for text in ["the film was very good .", "Unseen wörds, digits 42 and 🙂 too!\n"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    result = pretrain(corpus_cfg(tmp_path, corpus_file, "tokenizer.train=true", "tokenizer.vocab_size=300", "max_steps=4"))
    model = tmp_path / "run" / "model"
    assert result["vocab_size"] == 300 and result["tokenizer"] == "trained"
    assert len(AutoTokenizer.from_pretrained(model)) == AutoConfig.from_pretrained(model).vocab_size == 300
    assert AutoConfig.from_pretrained(tmp_path / "run" / "init").vocab_size == 300  # the untrained twin


@pytest.mark.slow
def test_task_corpus_never_holds_a_downstream_evaluation_sentence():
    from shotlab.data.tasks import load_task

    review_domain = {"name": "review_domain", "source": "builtin"}
    docs = set(load_corpus({"source": "task", "exclude_eval_of": ["movie_sentiment"]}, review_domain))
    movie = load_task({"name": "movie_sentiment", "source": "builtin"})
    assert len(docs) > 10_000
    assert not docs & set(movie.test.texts) and not docs & set(movie.validation.texts)
    assert not docs & set(load_task(review_domain).test.texts)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backbone=smollm2-135m", "tokenizer.train=true"], "tokenizer.train=true needs a backbone built from scratch"),
        (["max_steps=null", "max_minutes=null"], "set max_steps=N or max_minutes=M"),
        (["optimizer.schedule=step"], "optimizer.schedule must be 'cosine' or 'linear'"),
        (["corpus=text_files", "corpus.files=[/no/such/*.txt]"], "matches no file"),
        (["corpus=text_files", "block_size=4096"], "exceeds"),
        (["ckpt_path=/no/such.ckpt"], "is not a file"),
    ],
)
def test_mistakes_fail_with_one_line(tmp_path, corpus_file, overrides, message):
    if overrides[0] == "corpus=text_files" and "block_size=4096" in overrides:
        overrides = [*overrides, f"corpus.files=[{corpus_file}]"]
    with pytest.raises(ShotlabError, match=message) as err:
        pretrain(make_pretrain_cfg(tmp_path, *overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("arm", "path"),
    [("random_init", "outputs/pretrain/gpt2-mini/init"), ("pretrained", "outputs/pretrain/gpt2-mini/model"),
     ("smollm2", "smollm2-135m")],
)
def test_pretraining_ablation_arms_name_their_backbones(tmp_path, monkeypatch, arm, path):
    from shotlab.config import check_config

    monkeypatch.delenv("SHOTLAB_PRETRAINED", raising=False)
    cfg = make_cfg(tmp_path, "experiment=pretraining_ablation", f"backbone.arm={arm}", tiny=False)
    OmegaConf.resolve(cfg)
    check_config(cfg)
    assert (cfg.backbone.name, cfg.backbone.name_or_path, cfg.task.name) == (arm, path, "movie_sentiment")
    monkeypatch.setenv("SHOTLAB_PRETRAINED", "/elsewhere")
    cfg = make_cfg(tmp_path, "experiment=pretraining_ablation", f"backbone.arm={arm}", tiny=False)
    assert cfg.backbone.name_or_path == path.replace("outputs/pretrain/gpt2-mini", "/elsewhere")


def test_pretraining_ablation_sweeps_54_runs_with_prompt_probe(tmp_path):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=pretraining_ablation", f"output_dir={tmp_path}"],
                      return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    sizes = [len(str(v).split(",")) for v in params.values()]
    assert dict(zip(params, sizes)) == {"backbone.arm": 3, "method": 3, "regime": 2, "seed": 3}
    assert "prompt_probe" in params["method"]
