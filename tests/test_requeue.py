"""Requeue without SLURM: a run stopped by submitit's signal and run again in its folder ends with
the metrics (and the per-step losses) of the run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch

from shotlab.data.datamodule import ShotDataModule
from shotlab.data.sampling import draw_sample
from shotlab.data.tasks import load_task
from shotlab.models.classifier import TransferClassifier
from shotlab.requeue import hpc_checkpoints
from shotlab.train import run
from tests.conftest import make_cfg

# 16 examples in batches of 4: epochs end at steps 4, 8, ...; 24 steps, validated at 12 and 24.
RUN = ["method=finetune", "regime.k=8", "batch_size=4", "regime.min_steps=24", "epochs=2", "validations=2"]
KEYS = ("test_acc", "test_f1", "confusion", "num_train", "config_hash")


@pytest.fixture
def steps(monkeypatch):
    """`steps.loss`: training loss by global step; USR2 (SLURM's warning) during step `steps.signal_at`."""
    seen = SimpleNamespace(loss={}, signal_at=None)
    training_step = TransferClassifier.training_step

    def recorded(self, batch, batch_idx):
        loss = training_step(self, batch, batch_idx)
        seen.loss[self.global_step + 1] = loss.item()
        if self.global_step + 1 == seen.signal_at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return loss

    monkeypatch.setattr(TransferClassifier, "training_step", recorded)
    return seen


@pytest.fixture
def submitit():
    """A stand-in for submitit's USR2 handler: records the call, then exits as submitit does
    after requeueing the job."""
    calls = []

    def requeue(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeue)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_a_twice_requeued_run_ends_as_the_uninterrupted_one(tmp_path, steps, submitit):
    reference = run(make_cfg(tmp_path / "ref", *RUN))
    reference_loss, steps.loss = steps.loss, {}
    assert sorted(reference_loss) == list(range(1, 25)) and not submitit

    cfg, losses = make_cfg(tmp_path / "cut", *RUN), {}
    # Signalled in step 9, saved at the end of its epoch, step 12 (a validation step); the
    # requeued job is signalled in step 13, saves at step 16; the next one finishes.
    for signal_at, saved_at, done in [(9, 12, 0), (13, 16, 12)]:
        steps.signal_at = signal_at
        with pytest.raises(SystemExit):
            run(cfg)
        assert min(steps.loss) == done + 1 and max(steps.loss) == saved_at
        losses, steps.loss = {**losses, **steps.loss}, {}
        assert len(submitit) == len(hpc_checkpoints(tmp_path / "cut"))
        assert not (tmp_path / "cut" / "metrics.json").exists()
    assert [p.name for p in hpc_checkpoints(tmp_path / "cut")] == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]

    steps.signal_at = None
    resumed = run(cfg)
    assert min(steps.loss) == 17  # each job went on from the newest checkpoint
    assert {**losses, **steps.loss} == reference_loss  # same batches, same dropout: bit-identical losses
    assert [resumed[k] for k in KEYS] == [reference[k] for k in KEYS]
    best = [torch.load(r["best_checkpoint"], weights_only=False) for r in (reference, resumed)]
    assert best[0]["global_step"] == best[1]["global_step"]  # the validations chose the same weights
    torch.testing.assert_close(best[0]["state_dict"], best[1]["state_dict"], rtol=0, atol=0)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["test_acc"] == reference["test_acc"]
    assert not hpc_checkpoints(tmp_path / "cut") and len(submitit) == 2


def test_batch_order_depends_on_train_seed_and_epoch_only(synthetic_csv, tiny_backbone):
    task = load_task({"name": "s", "source": "csv", "files": {"train": str(synthetic_csv)},
                      "text_column": "text", "label_column": "label"})
    tokenizer = tiny_backbone.tokenizer

    def order(shuffle_seed, epoch):
        data = ShotDataModule(draw_sample(task, 8, 0), tokenizer, batch_size=4, shuffle_seed=shuffle_seed)
        data.setup()
        data.load_state_dict({"train_epochs": epoch})  # as a resumed run does
        torch.manual_seed(epoch)  # the global RNG has no say
        return [b["input_ids"].tolist() for b in data.train_dataloader()]

    assert order(0, 0) == order(0, 0) != order(0, 1)
    assert order(0, 1) != order(1, 1)
    before = torch.get_rng_state()  # making and running the loaders draws nothing from it
    data = ShotDataModule(draw_sample(task, 8, 0), tokenizer, batch_size=4, shuffle_seed=0)
    data.setup()
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        list(loader)
    assert torch.equal(torch.get_rng_state(), before)
