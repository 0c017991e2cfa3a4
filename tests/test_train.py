"""GPT-1 transfer on the tiny GPT-2: runs learn, are reproducible, freeze what they say,
swap heads, and write metrics.json / split.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch.testing import assert_close

from shotlab import ShotlabError
from shotlab.models.classifier import (
    TransferClassifier,
    add_lora,
    block_depth,
    load_backbone_weights,
)
from shotlab.models.heads import LinearHead
from shotlab.tracking import peak_memory_mb
from shotlab.train import run
from tests.conftest import make_cfg, tiny


def synthetic(tmp_path, csv, *overrides):
    return make_cfg(
        tmp_path, "task=csv", f"task.files.train={csv}", "task.test_size=null",
        "regime=full", "epochs=6", "validations=6", "batch_size=16", "optimizer.lr=3e-3",
        "method.backbone_lr_scale=1.0", *overrides,
    )


@pytest.mark.slow
def test_finetune_learns_a_learnable_task_and_writes_its_files(tmp_path, synthetic_csv):
    result = run(synthetic(tmp_path / "run", synthetic_csv))
    assert result["status"] == "ok" and result["test_acc"] >= 0.9
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test_acc"] == result["test_acc"] and written["num_train"] == 192
    for key in ("task", "backbone", "method", "regime", "k", "seed", "config_hash", "test_f1",
                "train_seconds", "eval_seconds", "peak_memory_mb", "confusion"):
        assert key in written
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train_ids"]) == 192 and split["train_hash"]
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_loss_goes_down(synthetic_csv, tmp_path):
    from shotlab.data.datamodule import ShotDataModule
    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import load_task

    task = load_task({"name": "s", "source": "csv", "files": {"train": str(synthetic_csv)},
                      "text_column": "text", "label_column": "label"})
    backbone = tiny()
    data = ShotDataModule(draw_sample(task, None, 0), backbone.tokenizer, max_length=32, batch_size=32)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    model = classifier(backbone, trains="head", lr=1e-2)
    opt = torch.optim.AdamW(model.param_groups())
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(batch)[0], batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def classifier(backbone, trains="all", lr=1e-3, **kw):
    return TransferClassifier(
        backbone, LinearHead(backbone.hidden_size, 2, dropout=0.0), 2,
        optimizer=torch.optim.AdamW, lr=lr, trains=trains, **kw,
    )


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path, synthetic_csv):
    runs = [run(synthetic(tmp_path / f"r{i}", synthetic_csv, "regime=few", "regime.k=4", "epochs=1", "validations=1"))
            for i in range(2)]
    keys = ("test_acc", "test_f1", "confusion", "num_train", "config_hash")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
    other = run(synthetic(tmp_path / "r2", synthetic_csv, "regime=few", "regime.k=4", "epochs=1", "validations=1", "seed=5"))
    split = [json.loads((tmp_path / d / "split.json").read_text())["train_ids"] for d in ("r0", "r1", "r2")]
    assert split[0] == split[1] != split[2] and other["config_hash"] != runs[0]["config_hash"]


def test_frozen_backbone_gets_no_gradient_and_stays_identical(synthetic_csv):
    backbone = tiny()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = classifier(backbone, trains="head", lr=1e-2)
    model.train()
    assert not backbone.training  # dropout stays off in a frozen backbone
    ids = torch.tensor([backbone.tokenizer("a fine film")["input_ids"]] * 2)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1])}
    opt = torch.optim.AdamW(model.param_groups())
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(batch)[0], batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert model.head[1].weight.grad is not None


def test_param_groups_give_every_weight_its_learning_rate(tiny_backbone):
    model = classifier(tiny_backbone, lr=1e-3, backbone_lr_scale=0.1, layer_decay=0.5, weight_decay=0.01)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in model.param_groups() for p in g["params"]}
    L = tiny_backbone.lm.config.num_hidden_layers  # 2
    for name, p in model.named_parameters():
        lr, wd = lr_of[id(p)]
        if name.startswith("head."):
            expect = 1e-3
        else:
            depth = block_depth(name.removeprefix("backbone."), L)
            expect = 1e-3 * 0.1 * 0.5 ** (L + 1 - depth)
        assert lr == pytest.approx(expect), name
        assert wd == (0.0 if p.ndim < 2 else 0.01), name
    # The blocks: embeddings deepest decay, block 1 = lr*0.1*0.5, final norm = lr*0.1.
    assert lr_of[id(tiny_backbone.lm.transformer.wte.weight)][0] == pytest.approx(1e-4 * 0.125)
    assert lr_of[id(tiny_backbone.lm.transformer.h[1].attn.c_attn.weight)][0] == pytest.approx(1e-4 * 0.5)
    assert lr_of[id(tiny_backbone.lm.transformer.ln_f.weight)][0] == pytest.approx(1e-4)


def test_lm_loss_weight_adds_the_real_next_token_loss(tiny_backbone):
    ids = torch.tensor([tiny_backbone.tokenizer("a fine film indeed")["input_ids"]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([1])}
    losses = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = classifier(tiny_backbone, lm_loss_weight=weight).eval()
        model.log = model.log_dict = lambda *a, **k: None
        losses[weight] = model._step(batch, "train").item()
        cls = torch.nn.functional.cross_entropy(model(batch)[0], batch["labels"]).item()
    lm = tiny_backbone.lm(input_ids=ids, labels=ids).loss.item()
    assert losses[0.0] != losses[0.5]
    assert losses[0.5] == pytest.approx(cls + 0.5 * lm, rel=1e-5)


@pytest.mark.slow
def test_head_swap_keeps_backbone_weights_and_resizes_the_head(tmp_path, synthetic_csv):
    first = run(synthetic(tmp_path / "sentiment", synthetic_csv, "epochs=1", "validations=1"))
    rows = ["text,label"] + [f"doc {i} about {'abc'[i % 3]},{'abc'[i % 3]}" for i in range(60)]
    (tmp_path / "three.csv").write_text("\n".join(rows) + "\n")
    cfg = make_cfg(tmp_path / "docs", "task=csv", f"task.files.train={tmp_path / 'three.csv'}",
                   f"backbone.init_from={tmp_path / 'sentiment'}")
    from shotlab.models.backbone import build_backbone

    backbone = build_backbone(cfg.backbone)
    load_backbone_weights(backbone, cfg.backbone.init_from)
    state = torch.load(first["best_checkpoint"], weights_only=False)["state_dict"]
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, state[f"backbone.{name}"]), name
    assert state["head.1.weight"].shape[0] == 2
    head = instantiate(cfg.head, hidden_size=backbone.hidden_size, num_classes=3)
    assert head[-1].weight.shape == (3, backbone.hidden_size)
    swapped = run(cfg)  # the whole chain runs: the fine-tuned blocks under a new 3-way head
    assert swapped["status"] == "ok" and len(swapped["confusion"]) == 3


def test_lora_checkpoint_restores_adapters_and_head(tmp_path):
    def fresh():
        b = tiny()
        add_lora(b, r=4, alpha=8, dropout=0.0)
        return classifier(b, trains="lora").eval()

    model = fresh()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # as if trained
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    assert not any("wte" in k for k in ckpt["state_dict"])  # frozen weights are not stored
    restored = fresh()
    restored.load_state_dict(ckpt["state_dict"], strict=False)
    ids = torch.tensor([restored.backbone.tokenizer("adapters and head")["input_ids"]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        assert_close(restored(batch)[0], model(batch)[0])
        assert not torch.allclose(fresh()(batch)[0], model(batch)[0])


@pytest.mark.parametrize("trains", ["all", "head"])
def test_best_weights_keeps_the_best_dev_evaluation_and_only_what_trained(tmp_path, trains):
    from types import SimpleNamespace

    from shotlab.models.classifier import BestWeights

    model = classifier(tiny(), trains=trains)
    best = BestWeights(tmp_path / "checkpoints" / "best.ckpt", monitor="val/acc")
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=0, callback_metrics={},
                              strategy=SimpleNamespace(barrier=lambda: None, model=model,
                                                       lightning_module_state_dict=model.state_dict))
    snapshots = {}
    for step, acc in enumerate([0.5, 0.75, 0.75, 0.6], start=1):  # a tie keeps the first of equals
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01)
        best.on_train_batch_end(trainer, model, None, None, step)
        trainer.global_step, trainer.callback_metrics = step, {"val/acc": torch.tensor(acc)}
        best.on_validation_end(trainer, model)
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
    saved = torch.load(best.path, weights_only=True)
    assert saved["global_step"] == 2 and saved["val/acc"] == 0.75
    assert set(saved["state_dict"]) == set(model.trained_state())
    assert trains == "all" or not any(k.startswith("backbone.") for k in saved["state_dict"])
    assert not torch.equal(model.head[-1].weight, snapshots[2]["head.1.weight"])
    best.restore(model)  # training ended after a worse evaluation: the best weights come back
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[2][name]), name
    state = best.state_dict()
    again = BestWeights(best.path, monitor="val/acc")
    again.load_state_dict(state)  # a requeued run compares with the best score it had
    trainer.callback_metrics = {"val/acc": torch.tensor(0.7)}
    again.on_validation_end(trainer, model)
    assert torch.load(best.path, weights_only=True)["global_step"] == 2


def test_gradient_method_at_k0_is_skipped_with_a_reason(tmp_path):
    result = run(make_cfg(tmp_path, "regime=zero", "method=finetune"))
    assert result["status"] == "skipped" and "k=0" in result["reason"]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "skipped"


def test_k_too_large_fails_before_any_model_loads(tmp_path, synthetic_csv):
    cfg = make_cfg(tmp_path, "task=csv", f"task.files.train={synthetic_csv}", "regime=few", "regime.k=500",
                   "backbone=hf", "backbone.name_or_path=no-such-org/no-such-model")  # loading it would fail
    with pytest.raises(ShotlabError, match=r"k=500 per class is more than class 'bad' has"):
        run(cfg)


@pytest.mark.parametrize(("regime_steps", "method_steps", "steps"), [(5, 12, 12), (9, "null", 9), (9, 0, 3), (30, 5, 5)])
def test_a_methods_min_steps_takes_the_place_of_the_regimes(tmp_path, synthetic_csv, regime_steps, method_steps, steps):
    # k=2/class: 4 examples, one batch an epoch, 3 epochs -> 3 steps unless a min_steps asks for more
    cfg = synthetic(tmp_path, synthetic_csv, "regime=few", "regime.k=2", "epochs=3", "validations=3", "method=linear_probe",
                    f"regime.min_steps={regime_steps}", f"method.min_steps={method_steps}")
    assert run(cfg)["train_steps"] == steps


def test_linear_probe_without_the_feature_cache_runs_the_backbone_and_agrees(tmp_path, synthetic_csv, monkeypatch):
    monkeypatch.setenv("SHOTLAB_FEATURES", str(tmp_path / "features"))
    args = ("regime=few", "regime.k=2", "epochs=1", "validations=1", "method=linear_probe", "method.min_steps=5")
    cached = run(synthetic(tmp_path / "cached", synthetic_csv, *args))
    assert list((tmp_path / "features").rglob("*.safetensors"))
    shutil.rmtree(tmp_path / "features")
    plain = run(synthetic(tmp_path / "plain", synthetic_csv, *args, "method.feature_cache=false"))
    assert not (tmp_path / "features").exists()  # nothing cached: the frozen backbone ran at every step
    scores = [[json.loads(line)["scores"] for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
              for d in ("cached", "plain")]
    assert_close(torch.tensor(scores[0]), torch.tensor(scores[1]), atol=1e-4, rtol=1e-4)
    assert plain["test_acc"] == cached["test_acc"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-run peak memory needs Linux /proc")
def test_peak_memory_is_the_runs_own_not_the_processes(tmp_path, synthetic_csv):
    # In a multirun all jobs share one process: an earlier job's peak must not show in a later one.
    big = torch.ones(1024, 1024, 256)  # 1 GiB, touched
    del big
    process_peak = peak_memory_mb()
    cfg = synthetic(tmp_path, synthetic_csv, "regime=few", "regime.k=2", "epochs=1", "validations=1", "method=linear_probe")
    peak = run(cfg)["peak_memory_mb"]
    assert process_peak > 1024 and 0 < peak < process_peak - 700


@pytest.mark.slow
def test_rerun_with_same_config_reuses_metrics(tmp_path, synthetic_csv):
    cfg = synthetic(tmp_path, synthetic_csv, "regime=few", "regime.k=2", "epochs=1", "validations=1", "method=linear_probe")
    first = run(cfg)
    (tmp_path / "checkpoints").rename(tmp_path / "moved")  # a re-run would write them again
    assert run(cfg) == first and not (tmp_path / "checkpoints").exists()


def test_train_throughput_counts_the_real_tokens_of_every_optimizer_step(tmp_path):
    from omegaconf import OmegaConf

    from shotlab.data.sampling import draw_sample
    from shotlab.data.tasks import load_task

    cfg = make_cfg(tmp_path, "method=finetune", "regime.k=2", "epochs=1", "validations=1", "regime.min_steps=3",
                   "batch_size=4", "+callbacks.throughput._target_=shotlab.models.classifier.TrainThroughput")
    result = run(cfg)
    throughput = json.loads((tmp_path / "throughput.json").read_text())
    assert throughput["steps"] == result["train_steps"] == 3
    # k=2 per class in one batch of 4: every step sees the 4 texts, each cut to max_length
    sample = draw_sample(load_task(OmegaConf.to_container(cfg.task, resolve=True)), 2, 0)
    lengths = [min(len(ids), cfg.max_length) for ids in tiny().tokenizer(list(sample.train.texts)).input_ids]
    assert throughput["tokens"] == 3 * sum(lengths)
    assert throughput["tokens_per_s"] == pytest.approx(throughput["tokens"] / throughput["seconds"])
