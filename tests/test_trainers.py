"""The shipped trainers run, not only compose: bf16 mixed precision (trainer=gpu's) with gradient
clipping, and DDP over two CPU processes, whose run writes one set of files that covers every
test example once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from shotlab.data.tasks import load_task
from shotlab.runfolder import writes
from shotlab.train import run
from tests.conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["method=finetune", "regime=few", "regime.k=2", "epochs=1", "validations=1", "regime.min_steps=2"]


def test_bf16_mixed_finetuning_runs_to_the_end(tmp_path):
    # The default optimizer is fused AdamW and every trainer clips gradients; Lightning refuses
    # that pair under mixed precision unless the optimizer runs unfused.
    cfg = make_cfg(tmp_path, *SHORT, "++trainer.precision=bf16-mixed")
    assert cfg.optimizer.optim.fused and cfg.trainer.gradient_clip_val
    result = run(cfg)
    assert result["status"] == "ok" and result["train_steps"] == 2
    rows = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == result["num_test"] + result["num_dev"] + result["num_heldout"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, True), ({"LOCAL_RANK": "1"}, False), ({"SLURM_PROCID": "0"}, True), ({"SLURM_PROCID": "3"}, False),
     ({"RANK": "0", "LOCAL_RANK": "0"}, True), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False)],
)
def test_only_global_rank_zero_writes(monkeypatch, env, expected):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert writes() is expected


@pytest.mark.slow
def test_two_process_cpu_ddp_writes_one_set_of_files_covering_every_example_once(tmp_path):
    # 47 test examples: the two processes predict 24 and 23 of them.
    overrides = ["backbone=tiny-gpt2", "logger=none", "task.test_size=47", "max_length=24",
                 "trainer.enable_progress_bar=false", "method=finetune", "regime.k=3", "epochs=1", "validations=1",
                 "regime.min_steps=4", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "++trainer.precision=32", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")}
    done = subprocess.run([sys.executable, "-m", "shotlab.train", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    run_dir = tmp_path / "run"
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("metrics.json")] == [Path("run/metrics.json")]
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("predictions.jsonl")] == [Path("run/predictions.jsonl")]
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.part"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["num_test"] == 47 and metrics["train_steps"] == 4

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    task_cfg = OmegaConf.to_container(make_cfg(run_dir, "task.test_size=47").task, resolve=True)
    test_ids = load_task(task_cfg).test.ids
    assert [r["id"] for r in rows if r["split"] == "test"] == test_ids  # each once, in the split's order
    dev = Counter(r["id"] for r in rows if r["split"] == "dev")
    assert sum(dev.values()) == metrics["num_dev"] == 6 and set(dev.values()) == {1}
    correct = sum(r["prediction"] == r["label"] for r in rows if r["split"] == "test")
    assert metrics["test_acc"] == pytest.approx(correct / 47)

    # Each example's scores are its own: one process, scoring the saved model again, agrees.
    saved = torch.tensor([r["scores"] for r in rows if r["split"] == "test"])
    torch.testing.assert_close(saved, rescore(metrics["best_checkpoint"], task_cfg), atol=1e-4, rtol=1e-4)


def rescore(ckpt_path: str, task_cfg: dict) -> torch.Tensor:
    import lightning as L

    from shotlab.data.datamodule import ShotDataModule
    from shotlab.data.sampling import draw_sample
    from shotlab.methods.transfer import _predict
    from shotlab.models.classifier import TransferClassifier
    from shotlab.models.heads import LinearHead
    from tests.conftest import tiny

    backbone = tiny()
    model = TransferClassifier(backbone, LinearHead(backbone.hidden_size, 2, dropout=0.1), 2,
                               optimizer=torch.optim.AdamW, lr=1e-3)
    model.load_state_dict(torch.load(ckpt_path, weights_only=True)["state_dict"])
    data = ShotDataModule(draw_sample(load_task(task_cfg), 3, 0), backbone.tokenizer, max_length=24)
    data.setup()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    return _predict(trainer, model, data.test_dataloader(), 47)
