"""Gradient methods: a backbone + a head in one LightningModule (TransferClassifier), trained on
the k-shot sample with GPT-1's recipe; the best checkpoint on the dev sample scores the test set.

    finetune          every weight, new head, auxiliary LM loss
    linear_probe      frozen backbone, new head, pooled features cached on disk
    lora              LoRA adapters + new head
    prompt_finetune   every weight, prompt-formatted text, head = the zero-shot verbalizer rows
    prompt_probe      frozen backbone, prompt-formatted text (cached features), head = the verbalizer rows

The prompt-aware ones start as the zero-shot classifier: they record its dev accuracy and gold
log-probability before training (`dev_acc_start`, `dev_logprob_start`), so the report can choose
"no training" on the dev sample.
"""

from __future__ import annotations

import math
import sys
import time

import torch

from shotlab import ShotlabError
from shotlab.config import check_value
from shotlab.methods.base import Job, Method, Outcome
from shotlab.predictions import accuracy, gold_logprob

TRAINS = ("all", "head", "lora")


class Transfer(Method):
    """A new head on the pooled state of the (raw) text; `trains` says which weights learn."""

    runs_at_zero = False
    starts_zero_shot = False  # True: the head starts as the zero-shot classifier (see dev_acc_start)
    reads_prompt = False  # True: texts are formatted with the task's template, pooled at its last token

    def __init__(self, name: str, trains: str = "all", lm_loss_weight: float = 0.0, backbone_lr_scale: float = 1.0,
                 layer_decay: float = 1.0, min_steps: int | None = None):
        super().__init__(name)
        if trains not in TRAINS:
            raise ShotlabError(f"method.trains must be one of {TRAINS}, got {trains!r}")
        check_value("method.lm_loss_weight", lm_loss_weight, 0)
        check_value("method.backbone_lr_scale", backbone_lr_scale, 0)
        check_value("method.layer_decay", layer_decay, 0, 1)
        check_value("method.min_steps", min_steps, 0, integer=True, none_ok=True)
        self.trains, self.lm_loss_weight, self.min_steps = trains, lm_loss_weight, min_steps
        self.backbone_lr_scale, self.layer_decay = backbone_lr_scale, layer_decay

    # --- what a subclass changes --------------------------------------------------------

    def check(self, cfg) -> None:
        if self.reads_prompt and cfg.backbone.pooling != "last":
            raise ShotlabError(f"{self.name} pools the prompt's last token; set backbone.pooling=last")

    def template(self, job: Job) -> str | None:
        """The prompt template the texts are formatted with, or None for the raw text."""
        return job.sample.task.template if self.reads_prompt else None

    def head(self, job: Job) -> torch.nn.Module:
        from hydra.utils import instantiate

        return instantiate(job.cfg.head, hidden_size=job.backbone.hidden_size, num_classes=job.sample.task.num_classes)

    def encoder(self, job: Job):
        """A feature encoder for the DataModule (cached pooled states), or None to run the backbone."""
        return None

    def prepare(self, backbone) -> None:
        """Change the backbone before training (e.g. add adapters)."""

    # --- the one training path ----------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        from hydra.utils import instantiate
        from lightning.pytorch.plugins import MixedPrecision

        from shotlab.data.datamodule import ShotDataModule
        from shotlab.models.classifier import BestWeights, TransferClassifier
        from shotlab.requeue import ResumeOnSlurm, hpc_checkpoints

        cfg, sample, out = job.cfg, job.sample, job.out
        self.prepare(job.backbone)
        data = ShotDataModule(sample, job.backbone.tokenizer, max_length=cfg.max_length, batch_size=cfg.batch_size,
                              eval_batch_size=cfg.eval_batch_size, template=self.template(job),
                              encoder=self.encoder(job), shuffle_seed=cfg.train_seed)
        has_dev = sample.dev is not None and len(sample.dev) > 0
        checkpoint = BestWeights(out / "checkpoints" / ("best.ckpt" if has_dev else "last.ckpt"),
                                 monitor="val/acc" if has_dev else None, full=cfg.checkpoint_optimizer)
        # A method that knows how long it should train says so (method.min_steps); the others
        # train at least the regime's min_steps.
        floor = cfg.regime.min_steps if self.min_steps is None else self.min_steps
        steps = max(floor, cfg.epochs * math.ceil(len(sample.train) / cfg.batch_size), 1)
        # Small samples repeat their few batches for min_steps; validate `validations` times in
        # all, evenly spaced in steps, rather than after every (one-batch) epoch.
        callbacks = [checkpoint, ResumeOnSlurm(), *(instantiate(c) for c in (cfg.get("callbacks") or {}).values())]
        trainer = instantiate(
            cfg.trainer, max_steps=steps, max_epochs=-1, callbacks=callbacks, logger=job.logger,
            default_root_dir=str(out), num_sanity_val_steps=0, check_val_every_n_epoch=None,
            val_check_interval=math.ceil(steps / cfg.validations),
        )
        # Lightning clips gradients itself, and under mixed precision refuses an optimizer that
        # unscales them inside its step (a fused one): there the optimizer runs unfused.
        unfused = (isinstance(trainer.precision_plugin, MixedPrecision) and trainer.gradient_clip_val
                   and cfg.optimizer.optim.get("fused"))
        model = TransferClassifier(
            job.backbone, self.head(job), sample.task.num_classes,
            optimizer=instantiate(cfg.optimizer.optim, **({"fused": False} if unfused else {})), lr=cfg.optimizer.lr,
            weight_decay=cfg.optimizer.weight_decay, warmup_fraction=cfg.optimizer.warmup_fraction,
            trains=self.trains, backbone_lr_scale=self.backbone_lr_scale,
            layer_decay=self.layer_decay, lm_loss_weight=self.lm_loss_weight,
        )
        t0 = time.perf_counter()
        data.setup()
        extra = {}
        if self.starts_zero_shot and has_dev:  # the untrained classifier on the dev sample: "no training"
            start = _predict(trainer, model, data.val_dataloader(), len(sample.dev))
            extra["dev_acc_start"] = accuracy(start, sample.dev.labels)
            extra["dev_logprob_start"] = gold_logprob(start, sample.dev.labels)
        trained = len(sample.train) > 0  # k=0 (a zero-shot head): nothing trains
        if trained:
            resume = hpc_checkpoints(out)  # a requeued SLURM job goes on from where it stopped
            if resume:
                print(f"shotlab: resuming from {resume[-1]}", file=sys.stderr)
            trainer.fit(model, datamodule=data, ckpt_path=resume[-1] if resume else cfg.ckpt_path)
        for done in hpc_checkpoints(out):  # on SLURM, predict(ckpt_path=None) would load the newest
            done.unlink()
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        if trained:
            checkpoint.restore(model, trainer)  # the best weights on the dev sample score the test set
        scores = {"test": _predict(trainer, model, data.test_dataloader(), len(sample.test))}
        if has_dev:
            scores["dev"] = _predict(trainer, model, data.val_dataloader(), len(sample.dev))
        for name, split in sample.extra_scored().items():  # the held-out pool, the eval tasks
            scores[name] = _predict(trainer, model, data.scoring_dataloader(name), len(split))
        return Outcome(scores, {**extra, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0,
                                "train_steps": trainer.global_step,
                                "best_checkpoint": str(checkpoint.path) if trained else ""})


def _predict(trainer, model, loader, n: int) -> torch.Tensor:
    """(n, C) class logits in the split's order (the loader batches similar lengths together).
    Under DDP each process predicts its share of the split (Lightning's distributed sampler, which
    may hand an example to two processes to even the shares out): every process gathers all the
    shares, and each example keeps its first prediction."""
    batches = trainer.predict(model, dataloaders=loader)
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        shares = [None] * trainer.world_size
        torch.distributed.all_gather_object(shares, batches)
        batches = [b for share in shares for b in share]
    index = torch.cat([b["index"] for b in batches])
    logits = torch.cat([b["logits"] for b in batches]).float()
    order = torch.argsort(index, stable=True)
    index, logits = index[order], logits[order]
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    if not torch.equal(index[first], torch.arange(n)):
        raise RuntimeError(f"predictions cover {int(first.sum())} of the split's {n} examples")
    return logits[first]


class Finetune(Transfer):
    """GPT-1 transfer: every weight trains, the blocks at a small learning rate, plus the LM loss."""


class LinearProbe(Transfer):
    """Frozen backbone, only a new head trains, on pooled features cached per example id: of the
    raw text, or of the prompt-formatted text (`prompt: true`), whose last state is the one that
    predicts the label word."""

    def __init__(self, name: str = "linear_probe", trains: str = "head", prompt: bool = False,
                 feature_cache: bool = True, **kw):
        if trains != "head":
            raise ShotlabError(f"method.trains must be 'head' for {name}, got {trains!r}")
        super().__init__(name, trains, **kw)
        self.reads_prompt, self.feature_cache = prompt, feature_cache

    def encoder(self, job: Job):
        """The on-disk feature cache; without it (`feature_cache: false`) every step runs the frozen backbone."""
        if not self.feature_cache:
            return None
        from shotlab.models.features import FeatureCache

        return FeatureCache.for_config(job.backbone, job.cfg)


class PromptProbe(LinearProbe):
    """A linear probe on prompt features whose head starts as the zero-shot classifier (the
    verbalizer rows of the output embedding): at k=0 it predicts as `prompt`; k examples move
    it from there, in seconds."""

    runs_at_zero = True
    starts_zero_shot = True

    def __init__(self, name: str = "prompt_probe", trains: str = "head", prompt: bool = True, **kw):
        if not prompt:
            raise ShotlabError(f"{name} classifies from the prompt's features; method.prompt must be true")
        super().__init__(name, trains, prompt, **kw)

    def head(self, job: Job) -> torch.nn.Module:
        from shotlab.models.heads import VerbalizerHead

        return VerbalizerHead.from_backbone(job.backbone, job.sample.task.verbalizer)


class Lora(Transfer):
    """LoRA adapters (peft) in the frozen blocks + a new head."""

    def __init__(self, name: str = "lora", trains: str = "lora", lora: dict | None = None, **kw):
        super().__init__(name, trains, **kw)
        self.lora = dict(lora or {})

    def prepare(self, backbone) -> None:
        from shotlab.models.classifier import add_lora

        add_lora(backbone, **self.lora)


class PromptFinetune(Transfer):
    """Fine-tuning through the LM head restricted to the verbalizer, on prompt-formatted text:
    it starts as the zero-shot classifier (so k=0 is a run, equal to `prompt`)."""

    runs_at_zero = True
    starts_zero_shot = True
    reads_prompt = True

    def head(self, job: Job) -> torch.nn.Module:
        from shotlab.models.heads import VerbalizerHead

        return VerbalizerHead.from_backbone(job.backbone, job.sample.task.verbalizer)
